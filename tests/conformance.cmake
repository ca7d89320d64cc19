# The ONNX backend test suite (libonnx-testdata): every listed test must keep passing
# (tests/conformance/passing.txt), and no model of the suite may crash kiln.
set(KILN_SUITE_DIR /usr/share/libonnx-testdata/data)
if(EXISTS ${KILN_SUITE_DIR}/node AND TARGET kiln_cli)
  add_test(NAME conformance
           COMMAND kiln_cli conformance --scope ${CMAKE_CURRENT_SOURCE_DIR}/conformance/v1-scope.txt
                   --expect ${CMAKE_CURRENT_SOURCE_DIR}/conformance/passing.txt)
  set_tests_properties(conformance PROPERTIES TIMEOUT 1800)
endif()
# The compiled backend: every test listed in passing-jit.txt must pass with the JIT,
# at 1 and 2 threads (results must not depend on the thread count).
if(EXISTS ${KILN_SUITE_DIR}/node AND TARGET kiln_cli)
  foreach(t 1 2)
    add_test(NAME conformance_jit_t${t}
             COMMAND kiln_cli conformance --backend jit --threads ${t}
                     --expect ${CMAKE_CURRENT_SOURCE_DIR}/conformance/passing-jit.txt)
    set_tests_properties(conformance_jit_t${t} PROPERTIES TIMEOUT 3600
                         ENVIRONMENT "KILN_CACHE_DIR=${CMAKE_BINARY_DIR}/kernel-cache;OMP_WAIT_POLICY=PASSIVE")
  endforeach()
endif()
