/*
 * A process with thousands of threads: each wakes every 10 ms and spins
 * for about half a millisecond, so that all of them are sampled and
 * named, for the given time.
 *
 * usage: threads <count> <seconds>
 * stdout: "threads <n>" once all are running.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;
static double end_time;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void threads_spin(void)
{
	double until = now() + 0.0005;
	while (now() < until)
		sink++;
}

static void *worker(void *arg)
{
	(void)arg;
	struct timespec pause = {0, 10 * 1000 * 1000};
	while (now() < end_time) {
		threads_spin();
		nanosleep(&pause, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s <count> <seconds>\n", argv[0]);
		return 2;
	}
	int count = atoi(argv[1]), started = 0;
	end_time = now() + atof(argv[2]);
	pthread_t *t = calloc(count, sizeof *t);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (int i = 0; i < count; i++)
		started += pthread_create(&t[i], &attr, worker, NULL) == 0;
	printf("threads %d\n", started);
	fflush(stdout);
	for (int i = 0; i < count; i++)
		if (t[i])
			pthread_join(t[i], NULL);
	return started == count ? 0 : 1;
}
