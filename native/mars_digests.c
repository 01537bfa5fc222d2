// mars_digests: the block digests of a fast sync, computed on libuv's pool.
//
// blockDigests(fd, fromPos, lengthBytes, algorithm, key, out, callback) reads
// [fromPos, fromPos + lengthBytes) of fd (bytes beyond the end of a file read as zeros) and
// writes a 16-byte digest of every 4 KiB block into out, in order. algorithm: 0 = md5,
// 1 = sha1 (its first 16 bytes), 2 = gmac-aes128: the tag of AES-128-GCM under `key` (16 bytes)
// with the block as additional data, no plaintext, and a 12-byte IV holding the block number
// (offset / 4096) as 8 bytes little-endian and 4 zero bytes (docs/protocol.md, sync-digests).
// The callback gets 0, a negative errno (read), or -EPROTO when the crypto library failed.
//
// The crypto is the OpenSSL inside the running node, found with dlsym at load: no headers and
// no link-time dependency. digestsAvailable() is false when it is not there (then the caller
// hashes in JavaScript); a missing symbol never aborts the process.
//
// Why here: one 4 KiB digest per JavaScript call costs ~0.7 us of call overhead on top of the
// hash, and a sync hashes 262,144 blocks per GiB on each side. GMAC runs at ~5 GiB/s with
// AES-NI and carry-less multiply, where SHA-1 runs at ~2 GiB/s and MD5 at ~0.7 GiB/s.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>
#include "mars_native.h"

#define BLOCK_BYTES 4096
#define DIGEST_BYTES 16
#define READ_BYTES (128 * 1024) /* fits in L2: the hash reads what pread just wrote */
#define EVP_CTRL_GCM_GET_TAG 0x10
#define ALG_MD5 0
#define ALG_SHA1 1
#define ALG_GMAC 2

typedef struct evp_md_st EVP_MD;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

static struct {
  const EVP_MD *(*md5)(void);
  const EVP_MD *(*sha1)(void);
  EVP_MD_CTX *(*md_ctx_new)(void);
  void (*md_ctx_free)(EVP_MD_CTX *);
  int (*digest_init)(EVP_MD_CTX *, const EVP_MD *, void *engine);
  int (*digest_update)(EVP_MD_CTX *, const void *, size_t);
  int (*digest_final)(EVP_MD_CTX *, unsigned char *, unsigned int *);
  const EVP_CIPHER *(*aes_128_gcm)(void);
  EVP_CIPHER_CTX *(*cipher_ctx_new)(void);
  void (*cipher_ctx_free)(EVP_CIPHER_CTX *);
  int (*encrypt_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, void *engine, const unsigned char *key, const unsigned char *iv);
  int (*encrypt_update)(EVP_CIPHER_CTX *, unsigned char *out, int *outl, const unsigned char *in, int inl);
  int (*encrypt_final)(EVP_CIPHER_CTX *, unsigned char *out, int *outl);
  int (*cipher_ctx_ctrl)(EVP_CIPHER_CTX *, int type, int arg, void *ptr);
} ssl;
static bool ssl_found = false;

static void find_crypto(void) {
  void **slots = (void **)&ssl;
  static const char *names[] = {
    "EVP_md5", "EVP_sha1", "EVP_MD_CTX_new", "EVP_MD_CTX_free", "EVP_DigestInit_ex", "EVP_DigestUpdate", "EVP_DigestFinal_ex",
    "EVP_aes_128_gcm", "EVP_CIPHER_CTX_new", "EVP_CIPHER_CTX_free", "EVP_EncryptInit_ex", "EVP_EncryptUpdate",
    "EVP_EncryptFinal_ex", "EVP_CIPHER_CTX_ctrl",
  };
  _Static_assert(sizeof names / sizeof names[0] == sizeof ssl / sizeof(void *), "one name per slot");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    void *sym = dlsym(RTLD_DEFAULT, names[i]);
    if (!sym) return;
    memcpy(&slots[i], &sym, sizeof sym);
  }
  ssl_found = true;
}

struct digest_job {
  struct mars_work w; // keeps out alive until the pool thread is done
  int fd;
  int algorithm;
  int64_t from;
  int64_t length;
  unsigned char key[16];
  unsigned char *out;
  int result;
};

/** Read length bytes at offset, all of them; zeros beyond the end of the file. */
static int read_full(int fd, unsigned char *buf, size_t length, int64_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, buf + done, length - done, (off_t)(offset + (int64_t)done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) {
      memset(buf + done, 0, length - done);
      break;
    }
    done += (size_t)n;
  }
  return 0;
}

static bool hash_block(EVP_MD_CTX *md_ctx, const EVP_MD *md, const unsigned char *block, unsigned char *out) {
  unsigned char full[64];
  unsigned int len = 0;
  if (ssl.digest_init(md_ctx, md, NULL) != 1 || ssl.digest_update(md_ctx, block, BLOCK_BYTES) != 1 || ssl.digest_final(md_ctx, full, &len) != 1 || len < DIGEST_BYTES) return false;
  memcpy(out, full, DIGEST_BYTES); // sha1's 20 bytes are cut to 16
  return true;
}

static bool gmac_block(EVP_CIPHER_CTX *ctx, int64_t block_number, const unsigned char *block, unsigned char *out) {
  unsigned char iv[12] = { 0 };
  for (int i = 0; i < 8; i++) iv[i] = (unsigned char)((uint64_t)block_number >> (8 * i));
  int outl = 0;
  unsigned char none[16];
  return ssl.encrypt_init(ctx, NULL, NULL, NULL, iv) == 1 && ssl.encrypt_update(ctx, NULL, &outl, block, BLOCK_BYTES) == 1 &&
         ssl.encrypt_final(ctx, none, &outl) == 1 && ssl.cipher_ctx_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, DIGEST_BYTES, out) == 1;
}

static void digest_execute(napi_env env, void *data) {
  (void)env;
  struct digest_job *j = data;
  unsigned char *buf = malloc(READ_BYTES);
  EVP_MD_CTX *md_ctx = j->algorithm == ALG_GMAC ? NULL : ssl.md_ctx_new();
  EVP_CIPHER_CTX *cipher_ctx = j->algorithm == ALG_GMAC ? ssl.cipher_ctx_new() : NULL;
  const EVP_MD *md = j->algorithm == ALG_MD5 ? ssl.md5() : j->algorithm == ALG_SHA1 ? ssl.sha1() : NULL;
  j->result = 0;
  if (!buf) j->result = -ENOMEM;
  else if (j->algorithm == ALG_GMAC ? !cipher_ctx || ssl.encrypt_init(cipher_ctx, ssl.aes_128_gcm(), NULL, j->key, NULL) != 1 : !md_ctx || !md) j->result = -EPROTO;
  unsigned char *out = j->out;
  for (int64_t done = 0; j->result == 0 && done < j->length; done += READ_BYTES) {
    size_t n = (size_t)(j->length - done < READ_BYTES ? j->length - done : READ_BYTES);
    j->result = read_full(j->fd, buf, n, j->from + done);
    for (size_t b = 0; j->result == 0 && b < n; b += BLOCK_BYTES, out += DIGEST_BYTES) {
      bool ok = j->algorithm == ALG_GMAC ? gmac_block(cipher_ctx, (j->from + done + (int64_t)b) / BLOCK_BYTES, buf + b, out) : hash_block(md_ctx, md, buf + b, out);
      if (!ok) j->result = -EPROTO;
    }
  }
  if (md_ctx) ssl.md_ctx_free(md_ctx);
  if (cipher_ctx) ssl.cipher_ctx_free(cipher_ctx);
  free(buf);
}

static void digest_complete(napi_env env, napi_status status, void *data) {
  struct digest_job *j = data;
  int result = status == napi_ok ? j->result : -ECANCELED;
  napi_value callback = mars_release_work(env, &j->w);
  free(j);
  mars_call_back(env, callback, result);
}

static napi_value block_digests(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  const char *usage = "blockDigests(fd, fromPos, lengthBytes, algorithm 0..2, key: 16-byte Buffer | null, out: Buffer of 16 bytes per block, callback)";
  if (!mars_get_args(env, info, 7, argv)) return mars_throw_type(env, usage);
  if (!ssl_found) {
    napi_throw_error(env, "ENOTSUP", "blockDigests: no crypto library in this process");
    return NULL;
  }
  int32_t fd, algorithm;
  int64_t from, length;
  void *out = NULL, *key = NULL;
  size_t out_len = 0, key_len = 0;
  napi_valuetype key_type, cb_type;
  if (!mars_get_fd(env, argv[0], &fd) || !mars_get_offset(env, argv[1], &from) || !mars_get_offset(env, argv[2], &length) ||
      from % BLOCK_BYTES != 0 || length % BLOCK_BYTES != 0 || napi_get_value_int32(env, argv[3], &algorithm) != napi_ok ||
      algorithm < ALG_MD5 || algorithm > ALG_GMAC || napi_typeof(env, argv[4], &key_type) != napi_ok ||
      !mars_get_buffer(env, argv[5], &out, &out_len) || out_len != (size_t)(length / BLOCK_BYTES) * DIGEST_BYTES ||
      napi_typeof(env, argv[6], &cb_type) != napi_ok || cb_type != napi_function)
    return mars_throw_type(env, usage);
  if (algorithm == ALG_GMAC ? !mars_get_buffer(env, argv[4], &key, &key_len) || key_len != 16 : key_type != napi_null)
    return mars_throw_type(env, "blockDigests: gmac needs a 16-byte key, the hashes none");

  struct digest_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "blockDigests: out of memory");
    return NULL;
  }
  j->fd = fd;
  j->algorithm = algorithm;
  j->from = from;
  j->length = length;
  j->out = out;
  if (key) memcpy(j->key, key, 16);
  mars_queue_work(env, &j->w, "mars_io.blockDigests", argv[5], argv[6], digest_execute, digest_complete, j);
  return NULL;
}

static napi_value digests_available(napi_env env, napi_callback_info info) {
  (void)info;
  return mars_boolean(env, ssl_found);
}

bool mars_digests_export(napi_env env, napi_value exports) {
  find_crypto();
  return mars_export_function(env, exports, "blockDigests", block_digests) &&
         mars_export_function(env, exports, "digestsAvailable", digests_available);
}
