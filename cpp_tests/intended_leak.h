// IntendedLeak: for the C++ suites' tests that leak on purpose.
#ifndef KVZCH_INTENDED_LEAK_H
#define KVZCH_INTENDED_LEAK_H

#if defined(__SANITIZE_ADDRESS__)
#define KVZCH_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVZCH_TEST_LSAN 1
#endif
#endif
#ifdef KVZCH_TEST_LSAN
// LeakSanitizer's interface, declared here: not every clang install ships
// <sanitizer/lsan_interface.h>.
extern "C" void __lsan_disable(void);
extern "C" void __lsan_enable(void);
#endif

// While it lives, LeakSanitizer (in the ASan build) ignores what this thread
// allocates: for a leak that a test makes on purpose.
class IntendedLeak {
 public:
  IntendedLeak() {
#ifdef KVZCH_TEST_LSAN
    __lsan_disable();
#endif
  }
  ~IntendedLeak() {
#ifdef KVZCH_TEST_LSAN
    __lsan_enable();
#endif
  }
  IntendedLeak(const IntendedLeak&) = delete;
  IntendedLeak& operator=(const IntendedLeak&) = delete;
};

#endif
