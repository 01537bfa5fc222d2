// The C heap's free pages handed back to the kernel (heapTrim), for marsd's memory bound.
//
// Node keeps Buffer memory in the C heap (malloc). A burst of large requests (NBD payloads,
// log batches, fetched chunks) grows the main arena, and when the burst is over glibc keeps
// the freed chunks resident unless they happen to sit at the top of the heap: measured here
// with nbdcopy and then fio against marsd under writeback pressure, 144 MiB of heap of which
// 69 MiB were in use. malloc_trim(0) gives every whole free page inside the heap back
// (MADV_DONTNEED), so the resident set follows what is in use. Elsewhere than glibc this does
// nothing and says so (-1).
#include "mars_native.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/** heapTrim(minFreeBytes) -> free bytes the heap held (trimmed when >= minFreeBytes), or -1 */
static napi_value heap_trim(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!mars_get_args(env, info, 1, argv)) return NULL;
  int64_t min_free_bytes;
  if (!mars_get_offset(env, argv[0], &min_free_bytes)) {
    return mars_throw_type(env, "heapTrim: minFreeBytes must be a non-negative safe integer");
  }
  double result = -1;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 info_now = mallinfo2();
  result = (double)info_now.fordblks;
  if (info_now.fordblks >= (size_t)min_free_bytes) malloc_trim(0);
#endif
  napi_value out;
  napi_create_double(env, result, &out);
  return out;
}

bool mars_memory_export(napi_env env, napi_value exports) {
  return mars_export_function(env, exports, "heapTrim", heap_trim);
}
