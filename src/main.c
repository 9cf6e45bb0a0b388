/* main.c - the spangate command line. Composes the pieces; owns nothing else. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "pg_schema.h"
#include "server.h"

static const char usage_text[] =
    "usage: spangate <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve [-c FILE]                 run the gateway\n"
    "  schema --print|--apply [-c FILE] print or create the PostgreSQL (and ClickHouse) schema\n"
    "  check [-c FILE]                 check the configuration and scripts, then exit\n"
    "  --help                          this text, with every configuration key\n"
    "  --version                       print the version\n"
    "\n"
    "-c FILE defaults to ./gateway.conf when it exists.\n";

static void usage(FILE *f) { fputs(usage_text, f); }

static int help(void) {
  sg_buf_t b = SG_BUF_INIT;
  usage(stdout);
  fputs("\nconfiguration keys (gateway.conf; the environment variable wins):\n", stdout);
  sg_config_help(&b);
  fwrite(b.data, 1, b.len, stdout);
  sg_buf_free(&b);
  return 0;
}

/* Parses -c/--config for the subcommands; other options are left to them. */
static const char *config_path(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) return argv[i + 1];
    if (!strncmp(argv[i], "--config=", 9)) return argv[i] + 9;
  }
  FILE *f = fopen("gateway.conf", "r");
  if (f) {
    fclose(f);
    return "gateway.conf";
  }
  return NULL;
}

static int load_config(int argc, char **argv, sg_config_t *cfg) {
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_config_load(cfg, config_path(argc, argv), &err);
  if (rc != 0) {
    fprintf(stderr, "spangate: %s\n", err.data ? err.data : sg_strerror(rc));
    sg_buf_free(&err);
    sg_config_free(cfg);
    return rc;
  }
  sg_buf_free(&err);
  sg_log_setup((sg_log_level_t)sg_log_level_parse(cfg->log_level), !strcmp(cfg->log_format, "json"));
  return 0;
}

/* Rejects options a subcommand does not know; allowed is a NULL-terminated list. */
static int check_options(int argc, char **argv, const char *const *allowed) {
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) { i++; continue; }
    if (!strncmp(argv[i], "--config=", 9)) continue;
    int ok = 0;
    for (const char *const *a = allowed; a && *a; a++)
      if (!strcmp(argv[i], *a)) ok = 1;
    if (!ok) {
      fprintf(stderr, "spangate %s: unknown option '%s'\n\n", argv[1], argv[i]);
      usage(stderr);
      return 2;
    }
  }
  return 0;
}

static int cmd_schema(int argc, char **argv) {
  static const char *const opts[] = {"--print", "--apply", NULL};
  int rc = check_options(argc, argv, opts);
  if (rc) return rc;
  int print = 0, apply = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--print")) print = 1;
    if (!strcmp(argv[i], "--apply")) apply = 1;
  }
  if (print == apply) {
    fprintf(stderr, "spangate schema: give exactly one of --print or --apply\n");
    return 2;
  }
  if (print) {
    fputs(sg_pg_schema_sql(), stdout);
    return 0;
  }
  sg_config_t cfg;
  if (load_config(argc, argv, &cfg) != 0) return 1;
  sg_buf_t err = SG_BUF_INIT;
  rc = sg_pg_schema_apply(cfg.postgres_uri, &err);
  if (rc != 0) {
    sg_error("schema", "PostgreSQL: %s", err.data ? err.data : sg_strerror(rc));
  } else {
    sg_info("schema", "PostgreSQL schema is in place");
  }
  sg_buf_free(&err);
  sg_config_free(&cfg);
  return rc ? 1 : 0;
}

static int cmd_check(int argc, char **argv) {
  int rc = check_options(argc, argv, NULL);
  if (rc) return rc;
  sg_config_t cfg;
  if (load_config(argc, argv, &cfg) != 0) return 1;
  printf("configuration OK\n");
  sg_config_free(&cfg);
  return 0;
}

static int cmd_serve(int argc, char **argv) {
  int rc = check_options(argc, argv, NULL);
  if (rc) return rc;
  sg_config_t cfg;
  if (load_config(argc, argv, &cfg) != 0) return 1;
  rc = sg_server_run(&cfg);
  sg_config_free(&cfg);
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) return help();
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("spangate %s\n", SG_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "serve")) return cmd_serve(argc, argv);
  if (!strcmp(cmd, "schema")) return cmd_schema(argc, argv);
  if (!strcmp(cmd, "check")) return cmd_check(argc, argv);
  if (!strcmp(cmd, "config-markdown")) { /* used by `make docs` for the README */
    sg_buf_t b = SG_BUF_INIT;
    sg_config_markdown(&b);
    fwrite(b.data, 1, b.len, stdout);
    sg_buf_free(&b);
    return 0;
  }
  fprintf(stderr, "spangate: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return 2;
}
