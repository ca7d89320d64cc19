# libFuzzer smoke run: every fuzz target for a few seconds (scripts/fuzz.sh --ci) in its
# own clang + ASan/UBSan build under the build directory; skipped (exit 77) when clang or
# its fuzzer runtime is missing.  Registered once: not in the sanitizer or fuzz builds.
if(NOT KILN_SANITIZE AND NOT KILN_FUZZ)
  add_test(NAME fuzz_smoke
           COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/fuzz.sh 5 --ci --build-dir ${CMAKE_BINARY_DIR}/fuzz)
  set_tests_properties(fuzz_smoke PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 3600)
endif()
