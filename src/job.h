/* job.h - `spangate run|migrate|validate|ttl`: Lua jobs with the gw module on
 * a loop of their own. */
#ifndef SG_JOB_H
#define SG_JOB_H

/* argv[1] is the command. Returns the process exit status: the script's
 * (os.exit-like gw.exit(n), or 0 when it returns normally, 1 on an error),
 * 2 for usage errors. */
int sg_job_main(int argc, char **argv);

#endif
