// Shared by the files of the mars_io addon: argument checks and exports (mars_io.c).
#ifndef MARS_NATIVE_H
#define MARS_NATIVE_H
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <node_api.h>

napi_value mars_throw_type(napi_env env, const char *msg);
/** argv[0..count) of the call, exactly count of them. */
bool mars_get_args(napi_env env, napi_callback_info info, size_t count, napi_value *argv);
bool mars_get_fd(napi_env env, napi_value v, int32_t *fd);
/** A byte offset: a non-negative safe integer (JS numbers beyond 2^53 are not exact). */
bool mars_get_offset(napi_env env, napi_value v, int64_t *offset);
/** A Buffer's memory. */
bool mars_get_buffer(napi_env env, napi_value v, void **data, size_t *length);
bool mars_export_function(napi_env env, napi_value exports, const char *name, napi_callback cb);
/** A JavaScript number or boolean as a call's result. */
napi_value mars_number(napi_env env, double value);
napi_value mars_boolean(napi_env env, bool value);

/** A task on libuv's pool that calls back into JavaScript with one number. */
struct mars_work {
  napi_async_work work;
  napi_ref keep_ref; // what the pool thread reads or writes (buffers), alive until it is done
  napi_ref callback_ref;
};
/** Queue w (data is handed to execute and complete); false after a thrown error. */
bool mars_queue_work(napi_env env, struct mars_work *w, const char *name, napi_value keep, napi_value callback,
                     napi_async_execute_callback execute, napi_async_complete_callback complete, void *data);
/** In complete: release w and return its callback; the caller frees its task, then mars_call_back. */
napi_value mars_release_work(napi_env env, struct mars_work *w);
void mars_call_back(napi_env env, napi_value callback, double result);

/** mars_digests.c: blockDigests and digestsAvailable */
bool mars_digests_export(napi_env env, napi_value exports);
/** mars_memory.c: heapTrim */
bool mars_memory_export(napi_env env, napi_value exports);
/** mars_inotify.c: inotifyOpen, inotifyAdd, inotifyRemove, inotifyDrain */
bool mars_inotify_export(napi_env env, napi_value exports);
/** mars_crc32c.c: crc32cHardware, crc32cRange, crc32cChunks */
bool mars_crc32c_export(napi_env env, napi_value exports);
#endif
