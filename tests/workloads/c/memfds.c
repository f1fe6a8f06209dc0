/*
 * A process with thousands of distinct executable files mapped: it copies
 * an ELF file into N memory files (memfd_create), maps each one
 * executable, closes its descriptor (the mapping keeps the file), then
 * spins in its own code. A profiler that keeps every mapped file open
 * runs out of descriptors.
 *
 * usage: memfds <elf file> <count> <seconds>
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) static void memfds_spin(double seconds)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	do {
		for (int i = 0; i < 100000; i++)
			sink++;
		clock_gettime(CLOCK_MONOTONIC, &b);
	} while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < seconds);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s <elf file> <count> <seconds>\n", argv[0]);
		return 2;
	}
	int in = open(argv[1], O_RDONLY);
	struct stat st;
	if (in < 0 || fstat(in, &st) != 0) {
		perror(argv[1]);
		return 1;
	}
	char *image = malloc(st.st_size);
	if (!image || read(in, image, st.st_size) != st.st_size) {
		perror("read");
		return 1;
	}
	int count = atoi(argv[2]), mapped = 0;
	for (int i = 0; i < count; i++) {
		char name[32];
		snprintf(name, sizeof name, "hearth-elf-%d", i);
		int fd = memfd_create(name, MFD_CLOEXEC);
		if (fd < 0 || write(fd, image, st.st_size) != st.st_size) {
			perror("memfd");
			return 1;
		}
		if (mmap(NULL, st.st_size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) != MAP_FAILED)
			mapped++;
		close(fd);
	}
	printf("mapped %d\n", mapped);
	fflush(stdout);
	memfds_spin(atof(argv[3]));
	return 0;
}
