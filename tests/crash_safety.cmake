# Crash safety of training (tests/crash_safety.sh): `kiln train` killed with SIGKILL at
# many points, checkpoint writes included, resumes to the same final weights as an
# uninterrupted run.  make_tensor_dataset writes its small tensor dataset.
if(TARGET kiln_cli)
  add_executable(make_tensor_dataset ${CMAKE_CURRENT_SOURCE_DIR}/make_tensor_dataset.c)
  target_link_libraries(make_tensor_dataset PRIVATE kiln)
  add_test(NAME crash_safety
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/crash_safety.sh $<TARGET_FILE:kiln_cli>
                   $<TARGET_FILE:make_tensor_dataset> ${CMAKE_CURRENT_BINARY_DIR}/crash_safety)
  set_tests_properties(crash_safety PROPERTIES TIMEOUT 1800)
endif()
