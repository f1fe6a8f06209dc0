/*
 * shortlived.c - child program for the spawner workload: burns about 4 ms of
 * CPU in short_leaf, reached via main -> short_outer -> short_middle ->
 * short_leaf, then exits 0.
 *
 * Same rules as split.c: noinline + noclone keep each function a real frame
 * with its exact name, different constants keep identical-code folding away,
 * and arithmetic after each call prevents tail calls.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define CHAIN __attribute__((noinline, noclone))

#define BURN_NS 4000000u /* 4 ms of process CPU time */
/*
 * Iterations between clock reads. CLOCK_PROCESS_CPUTIME_ID is a real system
 * call (no vDSO), so it is read only every ~50 us to keep most samples in
 * user code of short_leaf rather than in the kernel.
 */
#define CHUNK 25000u

uint64_t sink;

static inline uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

CHAIN uint64_t short_leaf(uint64_t x)
{
	uint64_t start = cpu_ns();

	x |= 1;
	do {
		for (unsigned i = 0; i < CHUNK; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
	} while (cpu_ns() - start < BURN_NS);
	return x + 7;
}

CHAIN uint64_t short_middle(uint64_t x) { return short_leaf(x ^ 0x5a) + 2; }
CHAIN uint64_t short_outer(uint64_t x) { return short_middle(x ^ 0xa5) + 1; }

int main(void)
{
	sink = short_outer((uint64_t)getpid());
	return 0;
}
