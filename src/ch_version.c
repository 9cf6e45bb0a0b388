/* ch_version.c - ClickHouse server versions and what each can do.
 *
 * Capability thresholds (the first version that has the feature; sources are
 * ClickHouse's changelogs, docs/en/whats-new/changelog/20xx.md and
 * docs/changelogs/ in ClickHouse/ClickHouse, and pull requests):
 *
 *   SG_CH_LOWCARD             19.3  LowCardinality no longer needs
 *                                   allow_experimental_low_cardinality_type
 *                                   (the setting became obsolete with 19.3's
 *                                   release, 2019-02-13: "obsolete, remove
 *                                   after 2019-08-13"). 18.16 still has the
 *                                   setting, default 0 (checked on 18.16.1).
 *   SG_CH_TTL                 19.6  "TTL expressions for columns and tables"
 *                                   (19.6.2.11, #4212).
 *   SG_CH_JSON_FUNCS          19.8  "Added functions to work with JSON"
 *                                   (19.8.3.8, #4686, #5124).
 *   SG_CH_DATETIME64          20.1  "Add DateTime64 datatype with
 *                                   configurable sub-second precision"
 *                                   (20.1.2.4, #7170).
 *   SG_CH_SKIP_INDEX          20.1  "Data skipping indices are production
 *                                   ready and enabled by default" (20.1.2.4,
 *                                   #7974; bloom_filter itself since 19.5
 *                                   behind allow_experimental_data_skipping_
 *                                   indices, #4499).
 *   SG_CH_TTL_DELETE_KW       20.1  explicit TTL actions (`DELETE`, `TO
 *                                   DISK`) came with TTL moves (20.1, #8140);
 *                                   19.6..19.17 accept only `TTL expr`.
 *   SG_CH_TTL_ONLY_DROP_PARTS 20.1  conservative: present in 20.1 (the exact
 *                                   19.x release that added it is not
 *                                   verified). Not rendered, see below.
 *   SG_CH_EXCEPTION_HEADER    20.3  "Added X-ClickHouse-Exception-Code HTTP
 *                                   header" (20.3.2.1, #8786); 18.16 puts
 *                                   the code only in the body (checked).
 *   SG_CH_BLOOM_UUID         20.12  "Added big integers and UUID data types
 *                                   support for MergeTree BloomFilter index"
 *                                   (#16642, merged 2020-11-05).
 *   SG_CH_REPLACING_DELETED   23.2  ReplacingMergeTree's second parameter,
 *                                   the is_deleted column (#41005): FINAL
 *                                   drops a key whose last row is deleted,
 *                                   OPTIMIZE ... FINAL CLEANUP removes them.
 */
#include "ch_version.h"

#include <stddef.h>

#include "err.h"

typedef struct {
  int major, minor;
  unsigned cap;
} cap_since_t;

static const cap_since_t cap_table[] = {
    {19, 3, SG_CH_LOWCARD},
    {19, 6, SG_CH_TTL},
    {19, 8, SG_CH_JSON_FUNCS},
    {20, 1, SG_CH_DATETIME64},
    {20, 1, SG_CH_SKIP_INDEX},
    {20, 1, SG_CH_TTL_DELETE_KW},
    {20, 1, SG_CH_TTL_ONLY_DROP_PARTS},
    {20, 3, SG_CH_EXCEPTION_HEADER},
    {20, 12, SG_CH_BLOOM_UUID},
    {23, 2, SG_CH_REPLACING_DELETED},
};

unsigned sg_ch_version_caps(int major, int minor) {
  unsigned caps = 0;
  for (size_t i = 0; i < sizeof(cap_table) / sizeof(cap_table[0]); i++) {
    const cap_since_t *c = &cap_table[i];
    if (major > c->major || (major == c->major && minor >= c->minor)) caps |= c->cap;
  }
  return caps;
}

static int parse_num(const char **p, int *out) {
  const char *s = *p;
  long v = 0;
  if (*s < '0' || *s > '9') return -1;
  while (*s >= '0' && *s <= '9') {
    v = v * 10 + (*s - '0');
    if (v > 100000) return -1;
    s++;
  }
  *out = (int)v;
  *p = s;
  return 0;
}

int sg_ch_version_parse(const char *s, sg_ch_version_t *v) {
  if (s == NULL || v == NULL) return SG_EINVAL;
  const char *p = s;
  int major, minor;
  if (parse_num(&p, &major) != 0 || *p != '.') return SG_EINVAL;
  p++;
  if (parse_num(&p, &minor) != 0) return SG_EINVAL;
  /* Further ".patch.build" components: digits and dots only. */
  while (*p == '.' || (*p >= '0' && *p <= '9')) p++;
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
  if (*p != '\0' || major < 1) return SG_EINVAL;
  v->major = major;
  v->minor = minor;
  v->caps = sg_ch_version_caps(major, minor);
  return 0;
}
