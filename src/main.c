/* main.c - the spangate command line. Composes the pieces; owns nothing else. */
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "ch.h"
#include "ch_schema.h"
#include "ch_setup.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "job.h"
#include "lua_rt.h"
#include "pg_schema.h"
#include "server.h"

static const char usage_text[] =
    "usage: spangate <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve [-c FILE]                 run the gateway\n"
    "  schema --apply [-c FILE]        create what is missing in PostgreSQL (and ClickHouse\n"
    "                                  when use_clickhouse); never drops anything\n"
    "  schema --print [--clickhouse-version X.Y] [-c FILE]\n"
    "                                  print the PostgreSQL DDL, or ClickHouse's for version X.Y\n"
    "                                  (database and cluster keys from the configuration)\n"
    "  check [-c FILE]                 check the configuration and scripts, then exit\n"
    "  run SCRIPT.lua [ARGS...]        run a Lua job with the gw module (gw.pg, gw.ch, ...)\n"
    "  migrate [OPTIONS]               copy PostgreSQL history into ClickHouse (lua/jobs/migrate.lua)\n"
    "  validate [OPTIONS]              prove ClickHouse matches PostgreSQL (lua/jobs/validate.lua)\n"
    "  ttl apply|purge-postgres [OPTIONS]\n"
    "                                  retention jobs (lua/jobs/ttl.lua)\n"
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

/* Creates what is missing of the ClickHouse schema (rendered for the
 * server's own version; tables that exist keep their layout and get what
 * they lack), printing each thing it did. */
static int apply_clickhouse(const sg_config_t *cfg) {
  sg_ch_global_init();
  sg_buf_t done = SG_BUF_INIT, err = SG_BUF_INIT;
  sg_ch_target_t t;
  int rc = sg_ch_setup(cfg, SG_CH_SETUP_CREATE, &t, &done, &err);
  if (done.len) fwrite(done.data, 1, done.len, stdout);
  if (rc != 0) {
    sg_error("schema", "%s", err.data ? err.data : sg_strerror(rc));
  } else {
    sg_info("schema", "ClickHouse %s schema is in place in database %s%s%s (spans rows: %s)",
            t.version_text, cfg->clickhouse_database, cfg->clickhouse_cluster[0] ? " on cluster " : "",
            cfg->clickhouse_cluster, (t.spans.flags & SG_CH_LAYOUT_DT64) ? "DateTime64" : "DateTime + _us");
    if (done.len == 0) printf("ClickHouse: nothing was missing\n");
  }
  sg_buf_free(&done);
  sg_buf_free(&err);
  return rc;
}

static int cmd_schema(int argc, char **argv) {
  int print = 0, apply = 0;
  const char *chver = NULL;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--print")) print = 1;
    else if (!strcmp(argv[i], "--apply")) apply = 1;
    else if (!strcmp(argv[i], "--clickhouse-version") && i + 1 < argc) chver = argv[++i];
    else if (!strncmp(argv[i], "--clickhouse-version=", 21)) chver = argv[i] + 21;
    else if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) i++;
    else if (strncmp(argv[i], "--config=", 9)) {
      fprintf(stderr, "spangate schema: unknown option '%s'\n\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (print == apply || (chver && !print)) {
    fprintf(stderr, "spangate schema: give --print [--clickhouse-version X.Y] or --apply\n");
    return 2;
  }
  if (print && chver) {
    sg_ch_version_t ver;
    if (sg_ch_version_parse(chver, &ver) != 0) {
      fprintf(stderr, "spangate schema: '%s' is not a ClickHouse version (e.g. 24.8)\n", chver);
      return 2;
    }
    /* the configuration's database and cluster keys (and their env overrides) */
    sg_config_t cfg;
    if (load_config(argc, argv, &cfg) != 0) return 1;
    sg_ch_schema_opts_t so;
    sg_ch_setup_opts(&cfg, &so);
    sg_buf_t b = SG_BUF_INIT;
    int rc = sg_ch_schema_render(&ver, &so, &b);
    if (rc != 0) {
      fprintf(stderr, "spangate schema: %s\n", sg_strerror(rc));
      sg_buf_free(&b);
      sg_config_free(&cfg);
      return 1;
    }
    fwrite(b.data, 1, b.len, stdout);
    sg_buf_free(&b);
    sg_config_free(&cfg);
    return 0;
  }
  if (print) {
    fputs(sg_pg_schema_sql(), stdout);
    return 0;
  }
  sg_config_t cfg;
  if (load_config(argc, argv, &cfg) != 0) return 1;
  sg_buf_t err = SG_BUF_INIT;
  int rc = sg_pg_schema_apply(cfg.postgres_uri, &err);
  if (rc != 0) {
    sg_error("schema", "PostgreSQL: %s", err.data ? err.data : sg_strerror(rc));
  } else {
    sg_info("schema", "PostgreSQL schema is in place");
    if (cfg.use_clickhouse) rc = apply_clickhouse(&cfg);
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
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  if (!rt) {
    fprintf(stderr, "spangate: scripts: %s\n", err.data ? err.data : "out of memory");
    sg_buf_free(&err);
    sg_config_free(&cfg);
    return 1;
  }
  sg_lua_rt_free(rt);
  sg_buf_free(&err);
  printf("configuration and scripts (%s) OK\n", cfg.scripts);
  sg_config_free(&cfg);
  return 0;
}

/* The gateway's large, short-lived buffers (a big request body; a
 * statement for a large batch; a spool segment used to be one too, before
 * it was read through a mapping of its file) get their own mapping and go
 * back to the system when freed. By default glibc raises its mmap threshold to the largest block
 * freed so far (up to 32 MiB), after which such buffers come from the
 * workers' heaps and stay resident: `make bench`'s RSS kept climbing from
 * phase to phase (peak 92-108 MB over five runs; 83-91 MB with this,
 * 256 KiB, in three). Not for jobs: their page buffers are reused and
 * would fault in again each time. */
static void gateway_malloc_policy(void) {
#ifdef __GLIBC__
  if (!getenv("GLIBC_TUNABLES")) mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
}

static int cmd_serve(int argc, char **argv) {
  int rc = check_options(argc, argv, NULL);
  if (rc) return rc;
  gateway_malloc_policy();
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
  if (!strcmp(cmd, "run") || !strcmp(cmd, "migrate") || !strcmp(cmd, "validate") ||
      !strcmp(cmd, "ttl"))
    return sg_job_main(argc, argv);
  if (!strcmp(cmd, "config-markdown")) { /* used by `make docs` for docs/configuration.md */
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
