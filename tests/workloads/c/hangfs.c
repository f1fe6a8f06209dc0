/*
 * A FUSE file system whose server stops answering: it serves one file,
 * /app, with the contents of a given file. The first open of /app (the
 * exec that starts it) is answered; every later open never is, as with a
 * network mount whose server went away. Reads of an open file are always
 * answered, so the program started from it runs.
 *
 * usage: hangfs <file to serve> <mountpoint> [FUSE options, e.g. -f]
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *image;
static size_t image_len;
static int opens;

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	(void)fi;
	memset(st, 0, sizeof *st);
	if (strcmp(path, "/") == 0) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return 0;
	}
	if (strcmp(path, "/app") == 0) {
		st->st_mode = S_IFREG | 0755;
		st->st_nlink = 1;
		st->st_size = image_len;
		return 0;
	}
	return -ENOENT;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)off, (void)fi, (void)flags;
	if (strcmp(path, "/") != 0)
		return -ENOENT;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	fill(buf, "app", NULL, 0, 0);
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	if (strcmp(path, "/app") != 0)
		return -ENOENT;
	if (__sync_fetch_and_add(&opens, 1) > 0) {
		/* The server is gone: this request is never answered. */
		for (;;)
			pause();
	}
	fi->keep_cache = 1;
	return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)path, (void)fi;
	if (off < 0 || (size_t)off >= image_len)
		return 0;
	if (size > image_len - off)
		size = image_len - off;
	memcpy(buf, image + off, size);
	return size;
}

static const struct fuse_operations ops = {
	.getattr = fs_getattr,
	.readdir = fs_readdir,
	.open = fs_open,
	.read = fs_read,
};

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s <file to serve> <mountpoint> [FUSE options]\n", argv[0]);
		return 2;
	}
	FILE *f = fopen(argv[1], "rb");
	if (!f || fseek(f, 0, SEEK_END) != 0) {
		perror(argv[1]);
		return 1;
	}
	image_len = ftell(f);
	rewind(f);
	image = malloc(image_len);
	if (!image || fread(image, 1, image_len, f) != image_len) {
		perror("read");
		return 1;
	}
	fclose(f);
	/* fuse_main takes the mount point and options; drop our first argument. */
	argv[1] = argv[0];
	return fuse_main(argc - 1, argv + 1, &ops, NULL);
}
