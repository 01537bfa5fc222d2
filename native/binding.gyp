{
  "targets": [
    {
      "target_name": "mars_io",
      "sources": ["mars_io.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
