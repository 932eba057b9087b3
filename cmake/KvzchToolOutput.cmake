# For the ctest scripts (cmake -P): a command's standard output, or a fatal
# error that names the command when it fails. (execute_process's
# COMMAND_ERROR_IS_FATAL needs CMake 3.19.)
function(kvzch_tool_output var)
  execute_process(COMMAND ${ARGN} OUTPUT_VARIABLE output RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "${command} failed: ${result}")
  endif()
  set(${var} "${output}" PARENT_SCOPE)
endfunction()
