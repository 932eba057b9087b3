// The replaced global allocation functions of failing_allocation.h. In a
// translation unit of their own, so that the compiler never inlines the
// replaced operator delete where it can see the default operator new.
#include "failing_allocation.h"

#include <cstddef>
#include <cstdlib>
#include <new>

namespace {

// The allocations this thread may still make before operator new throws;
// -1 for no limit.
thread_local long allocations_left = -1;

}  // namespace

namespace kvzch_test {

AllocationFailure::AllocationFailure(long allowed) { allocations_left = allowed; }
AllocationFailure::~AllocationFailure() { allocations_left = -1; }

}  // namespace kvzch_test

void* operator new(std::size_t size) {
  if (allocations_left == 0) throw std::bad_alloc();
  if (allocations_left > 0) --allocations_left;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
