/*
 * split.c - ground-truth workload "70/30 split".
 *
 * One thread (main) runs rounds until the duration (argv[1] seconds,
 * default 10) has passed. Each round calls two call chains:
 *
 *   main -> run_rounds -> alpha_one -> alpha_two -> alpha_three -> leaf_seventy
 *   main -> run_rounds -> beta_one  -> beta_two  -> beta_three  -> leaf_thirty
 *
 * Both leaves run the same loop body (MIX_LOOP), leaf_seventy 7*K times and
 * leaf_thirty 3*K times, so the CPU split is 70/30 by construction. The
 * program also measures the split itself with CLOCK_THREAD_CPUTIME_ID around
 * each chain call and prints it at exit:
 *
 *   pid=<pid>                                   (first, flushed)
 *   truth leaf_seventy=<frac> leaf_thirty=<frac> (at exit)
 *
 * Build: gcc -O2 -fomit-frame-pointer -g (no frame pointers on purpose: the
 * profiler under test has to unwind with DWARF CFI).
 *
 * Why the attributes: every chain function is noinline so it is a real frame,
 * and noclone so gcc's IPA passes (ipa-cp, ipa-sra) cannot emit renamed copies
 * such as "alpha_two.constprop.0" or "leaf_thirty.isra.0"; the profile must
 * show exactly these names. Each function uses a different constant so that
 * identical-code folding (-fipa-icf, on at -O2) has nothing to merge. Each
 * caller does arithmetic on the callee's result after the call, so the call
 * cannot become a tail jump (which would drop the caller's frame).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Iterations per "unit": a round is 10*K iterations, about 10 ms on the
 * development machine (5-20 ms is the intended range). */
#define K 600000UL

#define CHAIN __attribute__((noinline, noclone))

/* Written at exit so the work cannot be optimized away. */
uint64_t sink;

/*
 * The one loop body both leaves share (an xorshift step; each iteration
 * depends on the previous one, so it cannot be vectorized or folded). Sharing
 * it means an iteration costs the same in either leaf and only the counts
 * decide the split.
 */
#define MIX_LOOP(x, n)                              \
	for (unsigned long i_ = 0; i_ < (n); i_++) {    \
		(x) ^= (x) << 13;                           \
		(x) ^= (x) >> 7;                            \
		(x) ^= (x) << 17;                           \
	}

CHAIN uint64_t leaf_seventy(uint64_t x)
{
	x |= 1; /* xorshift state must be nonzero */
	MIX_LOOP(x, 7 * K);
	return x + 0x70;
}

CHAIN uint64_t leaf_thirty(uint64_t x)
{
	x |= 1;
	MIX_LOOP(x, 3 * K);
	return x + 0x30;
}

CHAIN uint64_t alpha_three(uint64_t x) { return leaf_seventy(x ^ 0xa3) + 3; }
CHAIN uint64_t alpha_two(uint64_t x) { return alpha_three(x ^ 0xa2) + 2; }
CHAIN uint64_t alpha_one(uint64_t x) { return alpha_two(x ^ 0xa1) + 1; }

CHAIN uint64_t beta_three(uint64_t x) { return leaf_thirty(x ^ 0xb3) + 13; }
CHAIN uint64_t beta_two(uint64_t x) { return beta_three(x ^ 0xb2) + 12; }
CHAIN uint64_t beta_one(uint64_t x) { return beta_two(x ^ 0xb1) + 11; }

static inline uint64_t clock_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Thread CPU time spent inside each chain, summed over all rounds. */
static uint64_t alpha_ns, beta_ns;

CHAIN uint64_t run_rounds(double seconds)
{
	uint64_t deadline = clock_ns(CLOCK_MONOTONIC) + (uint64_t)(seconds * 1e9);
	uint64_t acc = 0;

	/* The seed changes every round so no call can be hoisted out of the loop. */
	for (uint64_t round = 1; clock_ns(CLOCK_MONOTONIC) < deadline; round++) {
		uint64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
		acc += alpha_one(acc ^ round);
		uint64_t t1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
		acc += beta_one(acc ^ round);
		uint64_t t2 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
		alpha_ns += t1 - t0;
		beta_ns += t2 - t1;
	}
	return acc + 1;
}

int main(int argc, char **argv)
{
	printf("pid=%d\n", (int)getpid());
	fflush(stdout);

	double seconds = argc > 1 ? strtod(argv[1], NULL) : 10.0;
	if (!(seconds > 0)) {
		fprintf(stderr, "usage: %s [seconds]\n", argv[0]);
		return 2;
	}

	sink = run_rounds(seconds);

	double total = (double)(alpha_ns + beta_ns);
	if (total <= 0)
		total = 1;
	printf("truth leaf_seventy=%.4f leaf_thirty=%.4f\n",
	       alpha_ns / total, beta_ns / total);
	return 0;
}
