#include "err.h"

static const char *const messages[] = {
#define XX(code, msg) msg,
  SG_ERRNO_MAP(XX)
#undef XX
};

const char *sg_strerror(int err) {
  if (err == 0) return "success";
  if (err < 0 && -err - 1 < SG__EIDX_MAX) return messages[-err - 1];
  return "unknown error";
}
