{
  "targets": [
    {
      "target_name": "mars_io",
      "sources": ["mars_io.c", "mars_digests.c", "mars_memory.c", "mars_inotify.c", "mars_crc32c.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "libraries": ["-ldl"]
    }
  ]
}
