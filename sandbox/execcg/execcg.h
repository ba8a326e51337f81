#ifndef PEAPOD_EXECCG_H
#define PEAPOD_EXECCG_H
#define EXECCG_NAME "peapod-exec-cgroups"
#define EXECCG_FDS_NAME "peapod-exec-cgroup-fds"
#define EXECCG_MAGIC "peapod-exec-cgroup-fds/1"
#define EXECCG_FD 3
#define EXECCG_FD_STR "3"
#define EXECCG_EXIT 125
void execcg_open(int argc, char **argv);
#endif
