/* log.h - the operator's log: levels, component context, text or JSON lines
 * on stderr. Library layers (buf, decoders, spool) never log; they return
 * codes and the layer that knows the context logs once.
 */
#ifndef SG_LOG_H
#define SG_LOG_H

#include <stdarg.h>

typedef enum {
  SG_LOG_DEBUG = 0,
  SG_LOG_INFO,
  SG_LOG_WARN,
  SG_LOG_ERROR,
  SG_LOG_OFF
} sg_log_level_t;

/* Parse "debug", "info", "warn", "error". Returns level or -1. */
int sg_log_level_parse(const char *s);
/* Process-wide settings, set once at start (and on reload). */
void sg_log_setup(sg_log_level_t level, int json);
sg_log_level_t sg_log_level(void);
/* Tag this thread's lines, e.g. "worker 2". NULL clears. The string must outlive the thread. */
void sg_log_set_thread_tag(const char *tag);

void sg_log_write(sg_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sg_log_vwrite(sg_log_level_t level, const char *component, const char *fmt, va_list ap);

#define sg_log_at(lvl, comp, ...)                                              \
  do {                                                                         \
    if ((lvl) >= sg_log_level()) sg_log_write((lvl), (comp), __VA_ARGS__);     \
  } while (0)
#define sg_debug(comp, ...) sg_log_at(SG_LOG_DEBUG, comp, __VA_ARGS__)
#define sg_info(comp, ...) sg_log_at(SG_LOG_INFO, comp, __VA_ARGS__)
#define sg_warn(comp, ...) sg_log_at(SG_LOG_WARN, comp, __VA_ARGS__)
#define sg_error(comp, ...) sg_log_at(SG_LOG_ERROR, comp, __VA_ARGS__)

#endif
