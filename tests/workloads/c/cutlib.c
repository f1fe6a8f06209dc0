/*
 * A small shared library for the hostile-file workload (cutter.c): one
 * function that spins inside the library, and one that calls back into
 * its caller, so that a thread can have a frame of the library on its
 * stack while it runs elsewhere.
 */
volatile unsigned long cutlib_sink;

__attribute__((noinline)) void cutlib_spin(volatile int *stop)
{
	while (!*stop)
		cutlib_sink++;
}

__attribute__((noinline)) void cutlib_call(void (*fn)(volatile int *), volatile int *stop)
{
	fn(stop);
	/* Not a tail call: the frame stays on the stack while fn runs. */
	__asm__ volatile("" ::: "memory");
	cutlib_sink++;
}
