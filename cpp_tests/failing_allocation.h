// Makes an allocation of the test's choice fail: the test binary that links
// failing_allocation.cpp replaces the global operator new, and an
// AllocationFailure arms it for the calling thread. Only for suites that run
// under no sanitizer or valgrind, which replace operator new themselves.
#ifndef KVZCH_TEST_FAILING_ALLOCATION_H
#define KVZCH_TEST_FAILING_ALLOCATION_H

namespace kvzch_test {

// While it lives, this thread may make `allowed` more allocations with
// operator new; the next one throws std::bad_alloc, as do those after it.
class AllocationFailure {
 public:
  explicit AllocationFailure(long allowed);
  AllocationFailure(const AllocationFailure&) = delete;
  AllocationFailure& operator=(const AllocationFailure&) = delete;
  ~AllocationFailure();
};

}  // namespace kvzch_test

#endif
