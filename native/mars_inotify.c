// Directory change events read on demand, for marsd's listing cache (common/disk/dir-watch.ts).
//
// The cache must know, before it answers from a listing, whether the directory changed since
// it was read. A stat of the directory tells it, at one syscall per directory per check: at
// 100 resources that was a quarter of an idle daemon's time. An inotify instance read without
// blocking tells the same for every watched directory at once: the kernel queues a directory's
// event before the syscall that changed it returns, so a read of the queue after a change
// always finds its event. Node's fs.watch cannot be used for this: it delivers events in a
// later turn of the event loop (a change another process made and then told us about over a
// socket could be answered from the old listing), and it drops the queue-overflow event.
//
// inotifyOpen() -> fd, or -errno
// inotifyAdd(fd, path, mode) -> watch descriptor, or -errno. Mode 0: the directory's entries
//   created, deleted, renamed, their attributes, never file contents; 1: only its own deletion
//   or move (an ancestor of a watched directory); 2: writes and truncations of the files in it
//   (logfile sizes). Each mode also reports the directory's own deletion or move. A path
//   watched already gets the new mask in place of the old one.
// inotifyRemove(fd, wd) -> 0, or -errno
// inotifyDrain(fd, out: Int32Array) -> n: out[0..2n) holds (wd, mask) pairs of the queued
//   events; -1: the queue overflowed or out was too small (events were lost: everything may
//   have changed); other negatives: -errno. Never blocks.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/inotify.h>
#include <unistd.h>
#include "mars_native.h"

#define SELF_MASK (IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define WATCH_MASK (SELF_MASK | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB)
#define CONTENTS_MASK (SELF_MASK | IN_MODIFY)
#define DRAIN_BUFFER_BYTES 65536

static napi_value inotify_open(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  return mars_number(env, fd < 0 ? -(double)errno : (double)fd);
}

static napi_value inotify_add(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, mode;
  if (!mars_get_args(env, info, 3, argv) || !mars_get_fd(env, argv[0], &fd) || napi_get_value_int32(env, argv[2], &mode) != napi_ok || mode < 0 || mode > 2) {
    return mars_throw_type(env, "inotifyAdd(fd, path, mode 0-2)");
  }
  char path[4096];
  size_t length = 0;
  if (napi_get_value_string_utf8(env, argv[1], path, sizeof path, &length) != napi_ok || length == 0 || length >= sizeof path - 1) {
    return mars_throw_type(env, "inotifyAdd: path must be a string of 1-4094 bytes");
  }
  static const uint32_t masks[3] = { WATCH_MASK, SELF_MASK, CONTENTS_MASK };
  int wd = inotify_add_watch(fd, path, masks[mode]);
  return mars_number(env, wd < 0 ? -(double)errno : (double)wd);
}

static napi_value inotify_remove(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd, wd;
  if (!mars_get_args(env, info, 2, argv) || !mars_get_fd(env, argv[0], &fd) || napi_get_value_int32(env, argv[1], &wd) != napi_ok) {
    return mars_throw_type(env, "inotifyRemove(fd, wd)");
  }
  return mars_number(env, inotify_rm_watch(fd, wd) < 0 ? -(double)errno : 0);
}

static napi_value inotify_drain(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  if (!mars_get_args(env, info, 2, argv) || !mars_get_fd(env, argv[0], &fd)) return mars_throw_type(env, "inotifyDrain(fd, out)");
  bool is_typed = false;
  napi_typedarray_type type;
  size_t capacity = 0;
  void *data = NULL;
  if (napi_is_typedarray(env, argv[1], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[1], &type, &capacity, &data, NULL, NULL) != napi_ok || type != napi_int32_array || capacity < 2) {
    return mars_throw_type(env, "inotifyDrain: out must be an Int32Array of at least 2 elements");
  }
  int32_t *out = data;
  size_t used = 0;
  bool lost = false;
  // Aligned for struct inotify_event, as inotify(7) asks.
  char buffer[DRAIN_BUFFER_BYTES] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) return mars_number(env, -(double)errno);
    if (n == 0) break;
    for (char *p = buffer; p < buffer + n;) {
      const struct inotify_event *e = (const struct inotify_event *)p;
      p += sizeof(struct inotify_event) + e->len;
      if (e->mask & IN_Q_OVERFLOW) lost = true;
      else if (used + 2 <= capacity) {
        out[used++] = e->wd;
        out[used++] = (int32_t)e->mask;
      } else lost = true; // keep reading: the queue is emptied either way
    }
  }
  return mars_number(env, lost ? -1 : (double)(used / 2));
}

bool mars_inotify_export(napi_env env, napi_value exports) {
  return mars_export_function(env, exports, "inotifyOpen", inotify_open) &&
         mars_export_function(env, exports, "inotifyAdd", inotify_add) &&
         mars_export_function(env, exports, "inotifyRemove", inotify_remove) &&
         mars_export_function(env, exports, "inotifyDrain", inotify_drain);
}
