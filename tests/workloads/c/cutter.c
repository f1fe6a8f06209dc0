/*
 * A process that does to its own shared library what a profiler must
 * survive: it maps a fresh copy, runs in it, then truncates or rewrites
 * the file under every mapping of it, "during use" (a thread still runs
 * in the library) or "after use" (the thread left it, but a frame of the
 * library stays on another thread's stack).
 *
 * usage: cutter <library.so> <rounds> <dir>
 * Round r uses mode r % 4: 0 cut during use, 1 cut after use,
 * 2 rewrite during use (with int3 bytes), 3 rewrite after use (with
 * pseudo-random bytes). Each round runs in a child process that maps a
 * new copy <dir>/cut-<r>.so; after the change it keeps mapping and
 * unmapping an executable file, so that a profiler rebuilds its view of
 * the process and reads the changed library again. Prints one line per
 * round and a summary.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int stop_spin, stop_call;
static sigjmp_buf spin_jump;
static volatile unsigned long main_sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs in the main program, called from inside the library. */
__attribute__((noinline)) void cutter_callback(volatile int *stop)
{
	while (!*stop)
		main_sink++;
}

__attribute__((noinline)) static void cutter_main_spin(double seconds)
{
	double end = now() + seconds;
	while (now() < end)
		main_sink++;
}

static void on_fault(int sig)
{
	(void)sig;
	siglongjmp(spin_jump, 1);
}

static void (*lib_spin)(volatile int *);
static void (*lib_call)(void (*)(volatile int *), volatile int *);

static void *spin_thread(void *arg)
{
	(void)arg;
	/* A fault in the library's vanished or rewritten code lands here. */
	if (sigsetjmp(spin_jump, 1) == 0)
		lib_spin(&stop_spin);
	while (!stop_call)
		main_sink++;
	return NULL;
}

static void *call_thread(void *arg)
{
	(void)arg;
	lib_call(cutter_callback, &stop_call);
	return NULL;
}

static int copy_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	char buf[65536];
	ssize_t n;
	if (in < 0 || out < 0)
		return -1;
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, n) != n)
			return -1;
	close(in);
	return close(out);
}

static void change_file(const char *path, int mode)
{
	int fd = open(path, O_WRONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0)
		_exit(3);
	if (mode < 2) {
		if (ftruncate(fd, 0) != 0)
			_exit(3);
	} else {
		unsigned long x = 0x9e3779b97f4a7c15ul;
		char buf[4096];
		for (off_t off = 0; off < st.st_size; off += sizeof buf) {
			for (size_t i = 0; i < sizeof buf; i++) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				buf[i] = mode == 2 ? (char)0xcc : (char)x;
			}
			size_t len = st.st_size - off < (off_t)sizeof buf ? (size_t)(st.st_size - off) : sizeof buf;
			if (pwrite(fd, buf, len, off) != (ssize_t)len)
				_exit(3);
		}
	}
	close(fd);
}

static void round_child(const char *copy, int mode)
{
	pthread_t spin, call;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGILL, &sa, NULL);
	sigaction(SIGTRAP, &sa, NULL);
	sigaction(SIGFPE, &sa, NULL);
	void *h = dlopen(copy, RTLD_NOW);
	if (!h)
		_exit(2);
	lib_spin = (void (*)(volatile int *))dlsym(h, "cutlib_spin");
	lib_call = (void (*)(void (*)(volatile int *), volatile int *))dlsym(h, "cutlib_call");
	if (!lib_spin || !lib_call)
		_exit(2);
	pthread_create(&spin, NULL, spin_thread, NULL);
	pthread_create(&call, NULL, call_thread, NULL);
	/* Long enough for a profiler to see the mapping and parse the file. */
	cutter_main_spin(0.3);
	int during = mode == 0 || mode == 2;
	if (!during) {
		stop_spin = 1;
		cutter_main_spin(0.05);
	}
	change_file(copy, mode);
	/* New executable mappings make a profiler rebuild its unwinding
	 * tables for this process, reading the changed library again. */
	int self = open("/proc/self/exe", O_RDONLY);
	for (int i = 0; i < 9; i++) {
		void *m = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, self, 0);
		cutter_main_spin(0.1);
		if (m != MAP_FAILED)
			munmap(m, 4096);
	}
	/* Never return into the library: its code may be gone. */
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s <library.so> <rounds> <dir>\n", argv[0]);
		return 2;
	}
	int rounds = atoi(argv[2]), clean = 0, faulted = 0;
	for (int r = 0; r < rounds; r++) {
		char copy[4096];
		snprintf(copy, sizeof copy, "%s/cut-%d.so", argv[3], r);
		if (copy_file(argv[1], copy) != 0) {
			perror("copy");
			return 1;
		}
		pid_t pid = fork();
		if (pid == 0)
			round_child(copy, r % 4);
		int status = 0;
		waitpid(pid, &status, 0);
		unlink(copy);
		int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		clean += ok;
		faulted += !ok;
		printf("round %d mode %d: %s\n", r, r % 4, ok ? "exited" : "died");
		fflush(stdout);
	}
	printf("rounds %d exited %d died %d\n", rounds, clean, faulted);
	return 0;
}
