# report.html of a tiny `kiln experiment` grid in headless Chromium: loads without console
# messages, shows its tables, charts and inline images (tests/report_check.sh; skipped
# when chromium is not installed).
if(TARGET kiln_cli)
  add_test(NAME report_check
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/report_check.sh $<TARGET_FILE:kiln_cli>
                   ${CMAKE_CURRENT_BINARY_DIR}/report_check)
  set_tests_properties(report_check PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1200
                       ENVIRONMENT "KILN_CACHE_DIR=${CMAKE_BINARY_DIR}/kernel-cache;OMP_WAIT_POLICY=PASSIVE")
endif()
