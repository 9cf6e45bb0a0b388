/* json_nest.h - compact JSON text for the stores, with Agenta's nesting of
 * dotted attribute keys.
 *
 * Stands alone (buf + jansson only). The PostgreSQL and ClickHouse writers
 * render every JSONB/JSON column through sg_json_dump().
 *
 * Output: exactly what jansson's json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
 * writes for the same value (keys in insertion order, "\u001F"-style upper
 * case escapes for control characters, '/' and non-ASCII unescaped, integers
 * exact, reals as "%.17g" with ".0" appended when neither '.' nor 'e' is
 * present) -- unless SG_JSON_SHORT_REAL asks for the shortest reals.
 *
 * Nesting (SG_JSON_NEST, Agenta's unmarshall_attributes): the keys of the
 * top-level object are split on '.', and each key's value is placed at that
 * path, so {"gen_ai.request.model":"m"} is written {"gen_ai":{"request":
 * {"model":"m"}}}. Only the top-level keys are split (values that are
 * objects keep their own keys as they are), as Agenta does. Rules where
 * Agenta is order-dependent or lossy, ours are deterministic and lossless:
 *   - A key with an empty segment (".a", "a.", "a..b") is not split, nor
 *     is a key of more than SG_JSON_NEST_MAX_SEGMENTS segments (the
 *     decoders' nesting limit for values, SG_ATTR_MAX_DEPTH): such keys
 *     are written as sent, in their place.
 *   - A container built from dotted keys is an array when every child
 *     segment is a canonical index ("0", "1", ... no leading zeros, at most
 *     9 digits) and the largest index is below 16 + 4 * (number of
 *     children); missing slots are null (Agenta pads intermediate gaps with
 *     {} or [], leaves with null). Otherwise it is an object whose keys are
 *     the segments (so "a.0" and "a.x" give {"a":{"0":..,"x":..}}; Agenta
 *     drops "a.x" there).
 *   - Conflicts: when a path both holds a value of its own and continues
 *     ({"a":1,"a.b":2}), a value that is an object is merged with the dotted
 *     children (its own members first; a member of the same name wins);
 *     otherwise the value stays. Every dotted key that could not be placed
 *     is written unsplit at the end of the top-level object, in its
 *     original order: {"a":1,"a.b":2} -> {"a":1,"a.b":2}. Nothing is lost.
 *   - Order: each nested member appears where its first key appeared.
 */
#ifndef SG_JSON_NEST_H
#define SG_JSON_NEST_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"

/* Most segments a key may have to be nested (decode.h's SG_ATTR_MAX_DEPTH);
 * the rendering's recursion is bounded by it. */
#define SG_JSON_NEST_MAX_SEGMENTS 32

#define SG_JSON_NEST 1       /* nest the dotted keys of the top-level object */
#define SG_JSON_SHORT_REAL 2 /* reals as the shortest text that reads back the
                                same double (Python's repr; 0.1 not
                                0.10000000000000001) instead of jansson's */

/* Append the compact JSON text of v (any JSON value) to out. flags: the
 * SG_JSON_* bits (passing 1 / 0 as "nest dotted keys" works). Returns 0,
 * SG_EINVAL (NULL value, or nesting deeper than 2048 levels: a cycle) or
 * SG_ENOMEM; on error out may hold a partial text (the caller resets it). */
int sg_json_dump(const json_t *v, int flags, sg_buf_t *out);

/* The attributes column as stored: attrs (an object, or NULL for none) with
 * the flags above, and, when resource is not NULL and attrs has neither a
 * "resource" key nor "resource.*" keys, a last member "resource" holding the
 * resource attributes nested the same way (so service.name is
 * attributes.resource.service.name). With resource NULL this is
 * sg_json_dump(attrs, flags, out) ("null" for NULL attrs). */
int sg_json_dump_attributes(const json_t *attrs, const json_t *resource, int flags, sg_buf_t *out);

/* The nested form of obj (SG_JSON_NEST rules) as a new JSON value (a new
 * reference the caller owns), or NULL on ENOMEM. A non-object is returned
 * as a new reference to itself. */
json_t *sg_json_nested(const json_t *obj);

/* The value found at the dotted path in obj whether its keys are flat or
 * nested: the key equal to the whole path first, then, at each '.' from the
 * left, a member named by the prefix that is an object (or an array and the
 * next segment an index) is searched for the rest. Borrowed reference or
 * NULL. Example: path "gen_ai.request.model" finds {"gen_ai.request.model":x},
 * {"gen_ai":{"request":{"model":x}}} and {"gen_ai":{"request.model":x}}.
 * The search gives up (NULL) after SG_JSON_PATH_MAX_LOOKUPS member
 * look-ups, which only a path of dozens of segments over keys made to match
 * many of its prefixes comes near; it recurses at most once per look-up. */
#define SG_JSON_PATH_MAX_LOOKUPS 4096
json_t *sg_json_path_get(const json_t *obj, const char *path, size_t len);

/* Internal, for the tests: the slots the nesting of obj's keys looks at in
 * its hash table (one per key segment when nothing collides); 0 when obj
 * is not an object or on ENOMEM. */
size_t sg__json_nest_probes(const json_t *obj);

/* Internal, for the tests: on = 0 makes the renderer build every trie
 * anew instead of reusing the kept shape of the same keys; 1 (the default)
 * reuses it. Not thread-safe; call before rendering. */
void sg__json_nest_shapes(int on);

/* Internal, for the tests: the text snprintf(out, 32, "%.17g", d) writes,
 * as the renderer makes it without snprintf, and its length; 0 when d is
 * outside the range it handles (zero, subnormal, from 2^127 up, below about
 * 1e-16, inf, nan), where the renderer uses snprintf itself. */
int sg__json_g17(double d, char out[32]);

#endif
