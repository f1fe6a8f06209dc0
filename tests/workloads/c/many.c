/*
 * many.c - many small processes, for the profile page's benchmark.
 *
 *   many <processes> <seconds> [busy_us] [period_ms]
 *
 * Forks <processes> children that run for <seconds>. Each names itself
 * "svc-NNN" (so that the page lists each one on its own row) and, every
 * <period_ms> (default 100), spends about <busy_us> (default 200) of CPU in
 * a call chain of 3 to 10 functions picked from 24, in an order that
 * depends on its index and on the round: many distinct stacks, as on a
 * real machine. The parent waits for every child.
 *
 * Built like the other workloads (-O2 -fomit-frame-pointer -g).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t (*step_fn)(const uint8_t *path, int depth, uint64_t x);

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static step_fn steps[24];
static double burst_end;

/* The leaf: burns CPU until the burst's end. */
static __attribute__((noinline)) uint64_t burn(uint64_t x)
{
	while (cpu_s() < burst_end)
		for (int i = 0; i < 2000; i++)
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
	return x;
}

/* 24 distinct functions; each calls the next one on the path, or burns. */
#define STEP(n)                                                                \
	static __attribute__((noinline, noclone)) uint64_t step_##n(           \
		const uint8_t *path, int depth, uint64_t x)                    \
	{                                                                      \
		uint64_t r = depth > 0 ? steps[path[0]](path + 1, depth - 1,   \
							x + n)                   \
				       : burn(x + n);                          \
		return r ^ (r >> (n % 13 + 1));                                \
	}
STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)
STEP(16) STEP(17) STEP(18) STEP(19) STEP(20) STEP(21) STEP(22) STEP(23)

static void child(int index, double seconds, double busy_s, double period_s)
{
	char name[16];
	snprintf(name, sizeof name, "svc-%03d", index);
	prctl(PR_SET_NAME, name);
	step_fn all[24] = {step_0,  step_1,  step_2,  step_3,  step_4,  step_5,
			   step_6,  step_7,  step_8,  step_9,  step_10, step_11,
			   step_12, step_13, step_14, step_15, step_16, step_17,
			   step_18, step_19, step_20, step_21, step_22, step_23};
	for (int i = 0; i < 24; i++)
		steps[i] = all[i];
	uint64_t seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1);
	double end = now_s() + seconds;
	uint64_t acc = 0;
	struct timespec nap = {0, (long)(period_s * 1e9)};
	for (unsigned round = 0; now_s() < end; round++) {
		/* A handful of paths per process, revisited round after round. */
		uint64_t r = seed ^ (uint64_t)(round % 6) * 0x2545f4914f6cdd1dULL;
		uint8_t path[10];
		int depth = 2 + (int)(r % 8);
		for (int i = 0; i < 10; i++) {
			r ^= r >> 12;
			r ^= r << 25;
			r ^= r >> 27;
			path[i] = (uint8_t)((r * 0x2545f4914f6cdd1dULL) >> 59) % 24;
		}
		burst_end = cpu_s() + busy_s;
		acc += steps[path[0]](path + 1, depth, acc);
		nanosleep(&nap, NULL);
	}
	if (acc == 42)
		puts("");
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: many <processes> <seconds> [busy_us] [period_ms]\n");
		return 2;
	}
	int n = atoi(argv[1]);
	double seconds = atof(argv[2]);
	double busy_s = (argc > 3 ? atof(argv[3]) : 200) / 1e6;
	double period_s = (argc > 4 ? atof(argv[4]) : 100) / 1e3;
	if (n < 1 || n > 10000 || !(seconds > 0)) {
		fprintf(stderr, "many: bad arguments\n");
		return 2;
	}
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			kill(0, SIGTERM);
			return 1;
		}
		if (pid == 0) {
			/* Killed with the parent: a test that kills it must not
			 * leave hundreds of processes behind. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() == 1)
				_exit(0);
			child(i, seconds, busy_s, period_s);
		}
	}
	while (wait(NULL) > 0)
		;
	return 0;
}
