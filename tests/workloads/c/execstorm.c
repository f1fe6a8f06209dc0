/*
 * An exec storm: forks and execs a program as fast as it can, keeping a
 * few children in flight, for a given time. Every exec brings a burst of
 * mmap, comm, fork and exit records.
 *
 * usage: execstorm <seconds> <program> [args...]
 * stdout: "execs <n>" at the end.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s <seconds> <program> [args...]\n", argv[0]);
		return 2;
	}
	double end = now() + atof(argv[1]);
	long execs = 0;
	int running = 0, failed = 0;
	while (now() < end || running > 0) {
		while (running < 8 && now() < end) {
			pid_t pid = fork();
			if (pid == 0) {
				execv(argv[2], argv + 2);
				_exit(127);
			}
			if (pid < 0)
				break;
			running++;
			execs++;
		}
		int status;
		if (wait(&status) > 0) {
			running--;
			failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		} else {
			break;
		}
	}
	printf("execs %ld failed %d\n", execs, failed);
	return failed ? 1 : 0;
}
