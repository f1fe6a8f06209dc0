/*
 * bigbin.c - a large binary, for the node benchmark's churn of new binaries
 * (scripts/bench-node.sh starts copies of it that differ in their build id).
 *
 *   bigbin <seconds> [busy_us] [period_ms]
 *
 * Linked with the functions bigbin.awk generates (build.sh): thousands of
 * distinct functions reachable through bigbin_table[], so that with -g the
 * binary is over 10 MB, most of it DWARF. For <seconds> it spends about
 * <busy_us> (default 3000) of every <period_ms> (default 20) of wall time
 * walking call chains of 2 to 8 of those functions, each chain starting at a
 * random one and going on through a pseudo-random pick in each function:
 * over a run of 10 to 20 s its samples reach thousands of distinct
 * functions, as a large service's would.
 *
 * stdout: "pid=<pid>" first (flushed). Exit status 0, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t (*bigbin_fn)(uint64_t, unsigned);
extern bigbin_fn const bigbin_table[];
extern const unsigned bigbin_count;

/* Written at exit so the work cannot be optimized away. */
uint64_t sink;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The end of every chain: a short dependent loop. */
__attribute__((noinline, noclone)) uint64_t bigbin_leaf(uint64_t x)
{
	for (int i = 0; i < 150; i++)
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
	return x ^ (x >> 29);
}

static uint64_t next_random(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bigbin <seconds> [busy_us] [period_ms]\n");
		return 2;
	}
	double seconds = atof(argv[1]);
	double busy_s = (argc > 2 ? atof(argv[2]) : 3000) / 1e6;
	double period_s = (argc > 3 ? atof(argv[3]) : 20) / 1e3;
	if (!(seconds > 0) || !(busy_s > 0) || !(period_s > 0)) {
		fprintf(stderr, "bigbin: bad arguments\n");
		return 2;
	}
	printf("pid=%d\n", (int)getpid());
	fflush(stdout);

	uint64_t seed = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)getpid() << 20) ^ (uint64_t)(now_s() * 1e6);
	if (seed == 0)
		seed = 1;
	double end = now_s() + seconds;
	struct timespec nap = {(time_t)period_s, (long)((period_s - (time_t)period_s) * 1e9)};
	uint64_t acc = 0;
	while (now_s() < end) {
		double burst_end = now_s() + busy_s;
		do {
			uint64_t r = next_random(&seed);
			unsigned depth = 1 + (unsigned)(r % 7);
			acc += bigbin_table[(r >> 8) % bigbin_count](acc ^ r, depth);
		} while (now_s() < burst_end);
		nanosleep(&nap, NULL);
	}
	sink = acc;
	return 0;
}
