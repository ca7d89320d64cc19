# Option values of every command through the CLI: a missing value and bad numbers are usage
# errors (exit 2) before any work starts, never a crash (tests/cli_args.sh).
if(TARGET kiln_cli)
  add_test(NAME cli_args COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli_args.sh $<TARGET_FILE:kiln_cli>)
endif()
