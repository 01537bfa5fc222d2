// mars_io: positional I/O without a thread-pool round trip per request.
//
// preadNoWait(fd, buffer, offsetBytes) reads with preadv2(..., RWF_NOWAIT): the kernel copies
// what is already in the page cache and returns -EAGAIN instead of waiting for the disk. marsd
// serves NBD reads with it on the event loop (no thread-pool round trip for cached data) and
// falls back to libuv's pool for the rest (common/disk/nowait-read.ts). The return value is
// the number of bytes read (0 at end of file, possibly fewer than asked when only a part is
// cached) or a negative errno; the function never throws for an I/O error, only for bad
// arguments, so the caller's fallback decision is one comparison.
//
// pwriteBatch(fd, buffers, offsets, callback) writes many buffers, each at its own offset, in
// one task on libuv's pool: buffers whose offsets follow each other go out in one pwritev. A
// writeback batch of random 4 KiB pages is thousands of writes; one pool hand-off each cost more
// main-thread time than the writes themselves. The callback gets the bytes written, or a
// negative errno (the first failure stops the batch; the caller fails the whole batch).
//
// blockDigests: the fast sync's block digests on the pool (mars_digests.c).
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <node_api.h>
#include "mars_native.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

napi_value mars_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

bool mars_get_args(napi_env env, napi_callback_info info, size_t count, napi_value *argv) {
  size_t argc = count;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == count;
}

bool mars_get_fd(napi_env env, napi_value v, int32_t *fd) {
  return napi_get_value_int32(env, v, fd) == napi_ok && *fd >= 0;
}

bool mars_get_offset(napi_env env, napi_value v, int64_t *offset) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d > 9007199254740991.0 || d != (double)(int64_t)d) return false;
  *offset = (int64_t)d;
  return true;
}

bool mars_get_buffer(napi_env env, napi_value v, void **data, size_t *length) {
  bool is_buffer = false;
  return napi_is_buffer(env, v, &is_buffer) == napi_ok && is_buffer && napi_get_buffer_info(env, v, data, length) == napi_ok;
}

static napi_value pread_nowait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!mars_get_args(env, info, 3, argv)) return mars_throw_type(env, "preadNoWait(fd, buffer, offsetBytes)");
  int32_t fd;
  if (!mars_get_fd(env, argv[0], &fd)) return mars_throw_type(env, "preadNoWait: fd must be a non-negative integer");
  void *data = NULL;
  size_t length = 0;
  if (!mars_get_buffer(env, argv[1], &data, &length)) return mars_throw_type(env, "preadNoWait: buffer must be a Buffer");
  int64_t offset;
  if (!mars_get_offset(env, argv[2], &offset)) return mars_throw_type(env, "preadNoWait: offsetBytes must be a non-negative safe integer");

  struct iovec iov = { .iov_base = data, .iov_len = length };
  ssize_t n;
  do {
    n = preadv2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);

  napi_value result;
  napi_create_double(env, n < 0 ? -(double)errno : (double)n, &result);
  return result;
}

struct write_batch {
  struct mars_work w; // keeps every buffer alive until the pool thread is done
  int fd;
  uint32_t count;
  struct iovec *iov;
  int64_t *offsets;
  double result; // bytes written, or -errno
};

/** Write iov[0..n) at offset, all of it (pwritev may write less than asked). */
static int write_run(int fd, struct iovec *iov, int n, int64_t offset, int64_t *written) {
  while (n > 0) {
    ssize_t w = pwritev(fd, iov, n, (off_t)offset);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (w == 0) return -EIO;
    *written += w;
    offset += w;
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0 && w > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

static void batch_execute(napi_env env, void *data) {
  (void)env;
  struct write_batch *b = data;
  int64_t written = 0;
  uint32_t i = 0;
  while (i < b->count) {
    uint32_t j = i + 1;
    int64_t next = b->offsets[i] + (int64_t)b->iov[i].iov_len;
    while (j < b->count && j - i < IOV_MAX && b->offsets[j] == next) {
      next += (int64_t)b->iov[j].iov_len;
      j++;
    }
    int rc = write_run(b->fd, b->iov + i, (int)(j - i), b->offsets[i], &written);
    if (rc < 0) {
      b->result = rc;
      return;
    }
    i = j;
  }
  b->result = (double)written;
}

static void batch_complete(napi_env env, napi_status status, void *data) {
  struct write_batch *b = data;
  double result = status == napi_ok ? b->result : -(double)ECANCELED;
  napi_value callback = mars_release_work(env, &b->w);
  free(b->iov);
  free(b->offsets);
  free(b);
  mars_call_back(env, callback, result);
}

static napi_value pwrite_batch(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!mars_get_args(env, info, 4, argv)) return mars_throw_type(env, "pwriteBatch(fd, buffers, offsets, callback)");
  int32_t fd;
  if (!mars_get_fd(env, argv[0], &fd)) return mars_throw_type(env, "pwriteBatch: fd must be a non-negative integer");
  bool is_array = false;
  uint32_t count = 0, offsets_count = 0;
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[1], &count) != napi_ok)
    return mars_throw_type(env, "pwriteBatch: buffers must be an array of Buffers");
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &offsets_count) != napi_ok || offsets_count != count || count == 0)
    return mars_throw_type(env, "pwriteBatch: offsets must be an array as long as buffers (not empty)");
  napi_valuetype type;
  if (napi_typeof(env, argv[3], &type) != napi_ok || type != napi_function)
    return mars_throw_type(env, "pwriteBatch: callback must be a function");

  struct write_batch *b = calloc(1, sizeof *b);
  if (b) {
    b->iov = calloc(count, sizeof *b->iov);
    b->offsets = calloc(count, sizeof *b->offsets);
  }
  if (!b || !b->iov || !b->offsets) {
    if (b) { free(b->iov); free(b->offsets); free(b); }
    napi_throw_error(env, "ENOMEM", "pwriteBatch: out of memory");
    return NULL;
  }
  b->fd = fd;
  b->count = count;
  for (uint32_t i = 0; i < count; i++) {
    napi_value buf, off;
    void *data = NULL;
    size_t length = 0;
    int64_t offset;
    if (napi_get_element(env, argv[1], i, &buf) != napi_ok || !mars_get_buffer(env, buf, &data, &length) || length == 0 ||
        napi_get_element(env, argv[2], i, &off) != napi_ok || !mars_get_offset(env, off, &offset)) {
      free(b->iov); free(b->offsets); free(b);
      return mars_throw_type(env, "pwriteBatch: every buffer must be a non-empty Buffer with a non-negative safe integer offset");
    }
    b->iov[i].iov_base = data;
    b->iov[i].iov_len = length;
    b->offsets[i] = offset;
  }
  mars_queue_work(env, &b->w, "mars_io.pwriteBatch", argv[1], argv[3], batch_execute, batch_complete, b);
  return NULL;
}

bool mars_queue_work(napi_env env, struct mars_work *w, const char *name, napi_value keep, napi_value callback,
                     napi_async_execute_callback execute, napi_async_complete_callback complete, void *data) {
  napi_value resource_name;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_reference(env, keep, 1, &w->keep_ref) != napi_ok ||
      napi_create_reference(env, callback, 1, &w->callback_ref) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, execute, complete, data, &w->work) != napi_ok ||
      napi_queue_async_work(env, w->work) != napi_ok) {
    napi_throw_error(env, NULL, "cannot queue work on the thread pool");
    return false; // the task is not freed: a reference may be live; this path means the runtime is broken
  }
  return true;
}

napi_value mars_release_work(napi_env env, struct mars_work *w) {
  napi_value callback;
  napi_get_reference_value(env, w->callback_ref, &callback);
  napi_delete_reference(env, w->keep_ref);
  napi_delete_reference(env, w->callback_ref);
  napi_delete_async_work(env, w->work);
  return callback;
}

void mars_call_back(napi_env env, napi_value callback, double result) {
  napi_value global, arg;
  napi_get_global(env, &global);
  napi_create_double(env, result, &arg);
  napi_call_function(env, global, callback, 1, &arg, NULL);
}

bool mars_export_function(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, name, fn) == napi_ok;
}

napi_value mars_number(napi_env env, double value) {
  napi_value out;
  napi_create_double(env, value, &out);
  return out;
}

napi_value mars_boolean(napi_env env, bool value) {
  napi_value out;
  napi_get_boolean(env, value, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  if (!mars_export_function(env, exports, "preadNoWait", pread_nowait)) return NULL;
  if (!mars_export_function(env, exports, "pwriteBatch", pwrite_batch)) return NULL;
  if (!mars_digests_export(env, exports)) return NULL;
  if (!mars_memory_export(env, exports)) return NULL;
  if (!mars_inotify_export(env, exports)) return NULL;
  if (!mars_crc32c_export(env, exports)) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
