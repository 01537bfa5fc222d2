// CRC32C (Castagnoli) of ranges of a Buffer, for the log records' checksums (common/log/crc32c.ts).
//
// Why here and not the npm package alone: a logfile record holds at most 4 KiB of payload, and
// its checksums are eleven CRC32C calls (the payload in 8 chunks, then 3 header and trailer
// ranges). Through the package each call needs a Buffer view of its range (a JavaScript object
// per call) and costs more than the 512-byte CRC it computes: measured 2.1 us per record for
// the eleven, against 0.57 us for one CRC over the same 4 KiB. These functions take offsets,
// so a record costs two calls and no allocation.
//
// crc32cHardware() -> true when the CPU has the CRC32 instruction (SSE4.2); without it the
//   functions below still answer correctly, byte by byte, and the caller keeps the package.
// crc32cRange(buf, start, end, prev) -> CRC32C of buf[start, end) continued from prev (the
//   CRC of what came before; 0 for none), as an unsigned 32-bit number.
// crc32cChunks(buf, at, length, out: Uint32Array) -> undefined: out[k] = CRC32C of chunk k of
//   buf[at, at + length) split into out.length chunks of floor(length / out.length) bytes, the
//   last one also taking the remainder (an empty chunk's CRC is 0).
#include <string.h>
#include "mars_native.h"
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define POLY_REFLECTED 0x82F63B78u

static uint32_t table[256];
static bool hardware = false;

static void init_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY_REFLECTED : c >> 1;
    table[i] = c;
  }
}

/** The raw register update (no pre or post inversion). */
static uint32_t crc_soft(uint32_t c, const uint8_t *p, size_t n) {
  while (n--) c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t word;
    memcpy(&word, p, 8); // unaligned load without breaking aliasing rules
    c64 = _mm_crc32_u64(c64, word);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c64;
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

static uint32_t crc32c(uint32_t prev, const uint8_t *p, size_t n) {
  uint32_t c = ~prev;
#if defined(__x86_64__)
  if (hardware) return ~crc_hw(c, p, n);
#endif
  return ~crc_soft(c, p, n);
}

/** A Buffer and a range [start, end) inside it; false after a thrown TypeError. */
static bool get_range(napi_env env, napi_value buf_v, napi_value start_v, napi_value end_v, const uint8_t **p, size_t *n,
                      const char *what) {
  void *data;
  size_t length;
  int64_t start, end;
  if (!mars_get_buffer(env, buf_v, &data, &length) || !mars_get_offset(env, start_v, &start) || !mars_get_offset(env, end_v, &end) ||
      start > end || (uint64_t)end > length) {
    mars_throw_type(env, what);
    return false;
  }
  *p = (const uint8_t *)data + start;
  *n = (size_t)(end - start);
  return true;
}

static napi_value crc32c_hardware(napi_env env, napi_callback_info info) {
  (void)info;
  return mars_boolean(env, hardware);
}

static napi_value crc32c_range(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!mars_get_args(env, info, 4, argv)) return NULL;
  const uint8_t *p;
  size_t n;
  if (!get_range(env, argv[0], argv[1], argv[2], &p, &n, "crc32cRange: needs a Buffer and 0 <= start <= end <= its length")) return NULL;
  uint32_t prev;
  if (napi_get_value_uint32(env, argv[3], &prev) != napi_ok) return mars_throw_type(env, "crc32cRange: prev must be a number");
  return mars_number(env, crc32c(prev, p, n));
}

static napi_value crc32c_chunks(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!mars_get_args(env, info, 4, argv)) return NULL;
  int64_t at, length;
  if (!mars_get_offset(env, argv[1], &at) || !mars_get_offset(env, argv[2], &length)) {
    return mars_throw_type(env, "crc32cChunks: at and length must be non-negative safe integers");
  }
  napi_value end_v = mars_number(env, (double)(at + length));
  const uint8_t *p;
  size_t n;
  if (!get_range(env, argv[0], argv[1], end_v, &p, &n, "crc32cChunks: needs a Buffer holding [at, at + length)")) return NULL;
  bool is_typed;
  napi_typedarray_type type;
  size_t count;
  void *out;
  if (napi_is_typedarray(env, argv[3], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[3], &type, &count, &out, NULL, NULL) != napi_ok || type != napi_uint32_array || count == 0) {
    return mars_throw_type(env, "crc32cChunks: out must be a non-empty Uint32Array");
  }
  uint32_t *crcs = out;
  size_t chunk = n / count;
  for (size_t k = 0; k < count; k++) {
    size_t len = k == count - 1 ? n - chunk * k : chunk;
    crcs[k] = len == 0 ? 0 : crc32c(0, p + chunk * k, len);
  }
  return NULL;
}

bool mars_crc32c_export(napi_env env, napi_value exports) {
  init_table();
#if defined(__x86_64__)
  __builtin_cpu_init();
  hardware = __builtin_cpu_supports("sse4.2");
#endif
  return mars_export_function(env, exports, "crc32cHardware", crc32c_hardware) &&
         mars_export_function(env, exports, "crc32cRange", crc32c_range) &&
         mars_export_function(env, exports, "crc32cChunks", crc32c_chunks);
}
