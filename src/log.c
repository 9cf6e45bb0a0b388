#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "buf.h"

static _Atomic int log_level = SG_LOG_INFO;
static _Atomic int log_json = 0;
static _Thread_local const char *thread_tag;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int sg_log_level_parse(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) return i;
  if (strcmp(s, "warning") == 0) return SG_LOG_WARN;
  if (strcmp(s, "off") == 0) return SG_LOG_OFF;
  return -1;
}

void sg_log_setup(sg_log_level_t level, int json) {
  atomic_store(&log_level, (int)level);
  atomic_store(&log_json, json);
}

sg_log_level_t sg_log_level(void) { return (sg_log_level_t)atomic_load(&log_level); }

void sg_log_set_thread_tag(const char *tag) { thread_tag = tag; }

void sg_log_vwrite(sg_log_level_t level, const char *component, const char *fmt, va_list ap) {
  char stamp[40];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(stamp + n, sizeof stamp - n, ".%03dZ", (int)(tv.tv_usec / 1000));

  char msgbuf[1024];
  sg_buf_t msg = SG_BUF_INIT, line = SG_BUF_INIT;
  va_list cp;
  va_copy(cp, ap);
  int len = vsnprintf(msgbuf, sizeof msgbuf, fmt, cp);
  va_end(cp);
  const char *text = msgbuf;
  size_t textlen = len < 0 ? 0 : (size_t)len;
  if (len >= (int)sizeof msgbuf && sg_buf_vprintf(&msg, fmt, ap) == 0) text = msg.data;
  else if (len >= (int)sizeof msgbuf) textlen = sizeof msgbuf - 1;

  const char *lvl = level <= SG_LOG_ERROR ? level_names[level] : "?";
  if (atomic_load(&log_json)) {
    sg_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"", stamp, lvl);
    sg_buf_json_escape(&line, component, strlen(component));
    sg_buf_puts(&line, "\"");
    if (thread_tag) {
      sg_buf_puts(&line, ",\"thread\":\"");
      sg_buf_json_escape(&line, thread_tag, strlen(thread_tag));
      sg_buf_puts(&line, "\"");
    }
    sg_buf_puts(&line, ",\"msg\":\"");
    sg_buf_json_escape(&line, text, textlen);
    sg_buf_puts(&line, "\"}\n");
  } else {
    sg_buf_printf(&line, "%s [%s] %s%s%s: ", stamp, lvl, thread_tag ? thread_tag : "",
                  thread_tag ? " " : "", component);
    sg_buf_append(&line, text, textlen);
    sg_buf_putc(&line, '\n');
  }
  if (line.data) fwrite(line.data, 1, line.len, stderr); /* one write per line */
  sg_buf_free(&line);
  sg_buf_free(&msg);
}

void sg_log_write(sg_log_level_t level, const char *component, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sg_log_vwrite(level, component, fmt, ap);
  va_end(ap);
}
