/* jalloc.h - where jansson's values live: regions for decoded requests.
 *
 * A request's spans decode into thousands of small JSON values (each
 * attribute is a string, its bytes and a hash-table pair) that are made
 * together, read together and given back together once the request is
 * answered. Taking each from malloc and giving each back was about a sixth
 * of the gateway's CPU, and the values of one request lay scattered among
 * those of the others. A region hands out memory from large chunks by
 * moving a pointer; giving a value back only counts it down. Its chunks go
 * when the owner has released the region and every value taken from it is
 * given back: a value that outlives its request (a reference kept
 * somewhere) keeps its chunk alive and never dangles.
 *
 * Every allocation jansson makes in a program linked with this file goes
 * through it (installed before main): from the region the thread has
 * entered, if any and the size is small, else from malloc. A header in
 * front of each says which, so the free side knows. Memory that jansson
 * returns to the caller (json_dumps) must go back with sg_json_free, not
 * free(); sg_json_dumps gives plain malloc memory instead.
 */
#ifndef SG_JALLOC_H
#define SG_JALLOC_H

#include <jansson.h>
#include <stddef.h>

typedef struct sg_jregion sg_jregion_t;

/* A new region, held by the caller; NULL when out of memory (callers then
 * simply do not enter one: values come from malloc). */
sg_jregion_t *sg_jregion_new(void);
/* This thread's JSON values come from r (NULL: from malloc) until the next
 * enter; returns the region entered before, to enter again after. */
sg_jregion_t *sg_jregion_enter(sg_jregion_t *r);
/* The owner is done with r (NULL: nothing); its memory goes once every
 * value taken from it has been given back (perhaps now). */
void sg_jregion_release(sg_jregion_t *r);

/* Values taken from r and not given back yet (for tests). */
size_t sg_jregion_values(sg_jregion_t *r);

/* Gives back memory jansson handed out (json_dumps' text). */
void sg_json_free(void *p);
/* json_dumps, as plain malloc memory (free() it); NULL on failure. */
char *sg_json_dumps(const json_t *j, size_t flags);

#endif
