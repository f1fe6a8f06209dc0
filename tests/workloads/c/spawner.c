/*
 * spawner.c - short-lived process workload.
 *
 * Usage: spawner [seconds [path-to-shortlived]]
 *
 * Forks and execs shortlived at 150 processes per second for the given
 * duration (default 10 s). The path defaults to "shortlived" next to this
 * binary. Spawns follow an absolute schedule (clock_nanosleep with
 * TIMER_ABSTIME), so the rate does not drift with fork/exec cost and the
 * spawner itself stays asleep between spawns.
 *
 * stdout: "pid=<pid>" first (flushed), "spawned=<n>" at the end.
 * Exit status 1 if any fork failed or any child did not exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RATE_PER_SEC 150

static long failures;

static void note_status(int status)
{
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		failures++;
}

/* Reap every child that has already exited, without blocking. */
static void reap_finished(void)
{
	int status;
	while (waitpid(-1, &status, WNOHANG) > 0)
		note_status(status);
}

static void default_child_path(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	if (n < 0) {
		perror("readlink /proc/self/exe");
		exit(2);
	}
	buf[n] = '\0';
	char *slash = strrchr(buf, '/');
	size_t dir_len = slash ? (size_t)(slash - buf) : 0;
	if (dir_len + sizeof("/shortlived") > len) {
		fprintf(stderr, "path too long\n");
		exit(2);
	}
	strcpy(buf + dir_len, "/shortlived");
}

int main(int argc, char **argv)
{
	printf("pid=%d\n", (int)getpid());
	fflush(stdout); /* also keeps the buffer empty across fork */

	double seconds = argc > 1 ? strtod(argv[1], NULL) : 10.0;
	if (!(seconds > 0)) {
		fprintf(stderr, "usage: %s [seconds [path-to-shortlived]]\n", argv[0]);
		return 2;
	}

	char path[PATH_MAX];
	if (argc > 2)
		snprintf(path, sizeof path, "%s", argv[2]);
	else
		default_child_path(path, sizeof path);
	if (access(path, X_OK) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 2;
	}

	long total = (long)(seconds * RATE_PER_SEC + 0.5);
	long period_ns = 1000000000L / RATE_PER_SEC;
	long spawned = 0;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);

	for (long i = 0; i < total; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			char *child_argv[] = {path, NULL};
			execv(path, child_argv);
			_exit(127);
		}
		if (pid < 0) {
			perror("fork");
			failures++;
		} else {
			spawned++;
		}
		reap_finished();

		next.tv_nsec += period_ns;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}

	int status;
	while (wait(&status) > 0)
		note_status(status);

	printf("spawned=%ld\n", spawned);
	if (failures) {
		fprintf(stderr, "spawner: %ld spawn(s) failed or exited non-zero\n", failures);
		return 1;
	}
	return 0;
}
