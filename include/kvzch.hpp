/*
 * kvzch.hpp - C++17 RAII layer over the kvzch C ABI (kvzch.h).
 *
 * Header-only, so it adds no symbols of its own to the library's ABI. Every
 * call goes through the plugin table (kvzch_get_api) of a kvzch::Library:
 * the library the program links (Library::linked(), which the constructors
 * without a Library use) or one loaded at run time (Library::open). The same
 * host code therefore serves both, and works with any libkvzch of the same
 * ABI major: a function the loaded library lacks throws kvzch::Unsupported
 * instead of jumping through a NULL entry.
 *
 * Failures throw kvzch::Error (status + the library's message). Sink
 * callables may throw: the trampoline catches everything, because an
 * exception unwinding through the Rust frames of batch_get is undefined.
 *
 * At the end, the pieces a host needs to export what the sinks see, so it
 * copies nothing from examples/predictor_demo.cpp: fb303_style_by_table
 * (per-table counter names), WindowedSum and SumStats (an fb303-style
 * registry with ".sum.60" exports), and prometheus_name, PrometheusText,
 * PrometheusReadStats and write_cache_info (a /metrics page).
 */
#ifndef KVZCH_HPP
#define KVZCH_HPP

/* Said once, here, instead of an error at every throw below. */
#if !defined(__cpp_exceptions)
#error "kvzch.hpp reports failures by throwing kvzch::Error: build with exceptions, or call the C API of kvzch.h, which returns a status"
#else

#include "kvzch.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <clocale>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

/* Before libstdc++ 8 and libc++ 7 there is no <charconv>; PrometheusText
 * then formats through snprintf. */
#if defined(__has_include)
#if __has_include(<charconv>)
#include <charconv>
#endif
#endif

#if __cplusplus >= 202002L && defined(__has_include)
#if __has_include(<span>)
#include <span>
#define KVZCH_HPP_HAS_SPAN 1
#endif
#endif

/* ThreadSanitizer's runtime annotations (see detail::sink_edge_release).
 * Declared here, not through <sanitizer/tsan_interface.h>, which some
 * toolchains that build with -fsanitize=thread do not install; weak, so that
 * they are null in a process without the TSan runtime, and every translation
 * unit, instrumented or not, compiles this header the same way. */
extern "C" void __tsan_acquire(void* addr) __attribute__((weak));
extern "C" void __tsan_release(void* addr) __attribute__((weak));

/* Each release's definitions live in a namespace named after the package
 * version (a ctest checks it against Cargo.toml's). The classes' layout may
 * change with any release, and the header's inline functions and variables are
 * weak or unique symbols that the dynamic linker binds to one definition per
 * process (a unique one even across libraries loaded with RTLD_LOCAL): two
 * shared libraries of one process built against different releases would run
 * each other's (Library::linked() returning the first one's object, laid out by
 * the other release). Hosts still write kvzch::Cache: the namespace is inline. */
namespace kvzch {
inline namespace v1_3_0 {

/* A failed kvzch_* call: its status and the message the library recorded. */
class Error : public std::runtime_error {
 public:
  Error(kvzch_status status, const std::string& what, std::string library_message)
      : std::runtime_error(what), status_(status), library_message_(std::move(library_message)) {}

  [[nodiscard]] kvzch_status status() const noexcept { return status_; }
  /* The library's own text ("kvzch_cache_batch_get: out_len 512 < ..."),
   * without the status prefix of what(). */
  [[nodiscard]] const std::string& library_message() const noexcept { return library_message_; }

 private:
  kvzch_status status_;
  std::string library_message_;
};

/* A call the loaded library cannot serve: it lacks the function (a library
 * older than it, or a build without that feature), or it is not of this
 * header's ABI major. Thrown before the library is called, so nothing
 * changed; status() is KVZCH_STATUS_UNSUPPORTED and library_message() is the
 * header's own explanation. */
class Unsupported : public Error {
 public:
  explicit Unsupported(const std::string& message)
      : Error(KVZCH_STATUS_UNSUPPORTED, "UNSUPPORTED: " + message, message) {}
};

namespace detail {

/* One loaded library: its plugin table and, when dlopen'd, its handle. Every
 * Library, Cache and SinkRegistration using it shares it, so the library
 * stays loaded while anything may still call into it. */
struct LibraryState {
  kvzch_api_v1 api{};
  void* handle = nullptr;
  std::string origin; /* for messages: a path, or "the linked libkvzch" */

  LibraryState() = default;
  LibraryState(const LibraryState&) = delete;
  LibraryState& operator=(const LibraryState&) = delete;
  ~LibraryState() {
    if (handle != nullptr) {
      dlclose(handle);
    }
  }
};
using LibraryPtr = std::shared_ptr<const LibraryState>;
using GetApi = kvzch_status (*)(std::uint32_t, kvzch_api_v1*, std::size_t);

/* Fills the table with the library's own kvzch_get_api. The library zeroes
 * every entry it lacks, up to this header's table size, so from then on a
 * NULL entry is all there is to check. */
inline void fill(LibraryState& library, GetApi get_api) {
  const kvzch_status status = get_api(KVZCH_ABI_MAJOR, &library.api, sizeof library.api);
  if (status != KVZCH_STATUS_OK) {
    throw Unsupported(library.origin + " has no ABI " + std::to_string(KVZCH_ABI_MAJOR) +
                      ".x plugin table (kvzch_get_api returned " +
                      std::to_string(static_cast<int>(status)) + ")");
  }
}

/* The last error is per thread, so this must run on the thread that saw the
 * failure and before any other kvzch_* call there. A library without
 * last_error_message has no message to give. */
inline std::string last_error_message(const kvzch_api_v1& api) {
  if (api.last_error_message == nullptr) {
    return {};
  }
  std::string buf(api.last_error_message(nullptr, 0) + 1, '\0');
  const std::size_t full = api.last_error_message(buf.data(), buf.size());
  buf.resize(std::min(full, buf.size() - 1));
  return buf;
}

/* what() is "STATUS: message"; the library's message already starts with the
 * function that failed, so the function name is added only when there is no
 * message to carry it. */
[[noreturn]] inline void throw_error(const kvzch_api_v1& api, const char* function,
                                     kvzch_status status) {
  std::string message = last_error_message(api);
  std::string what = api.status_name != nullptr
                         ? std::string(api.status_name(status))
                         : "status " + std::to_string(static_cast<int>(status));
  what += ": ";
  what += message.empty() ? std::string(function) : message;
  throw Error(status, what, std::move(message));
}

/* The table's entry for `function`, or Unsupported when the library lacks it. */
template <class Fn>
Fn entry(const LibraryState& library, Fn kvzch_api_v1::*member, const char* function) {
  const Fn fn = library.api.*member;
  if (fn == nullptr) {
    const std::uint32_t abi = library.api.abi_version;
    throw Unsupported(std::string(function) + " is not in " + library.origin + " (ABI " +
                      std::to_string(abi >> 16) + "." + std::to_string(abi & 0xFFFFu) + ")");
  }
  return fn;
}

/* Calls a fallible entry; any status but OK throws Error. */
template <class Fn, class... Args>
void call(const LibraryState& library, Fn kvzch_api_v1::*member, const char* function,
          Args... args) {
  const kvzch_status status = entry(library, member, function)(args...);
  if (status != KVZCH_STATUS_OK) {
    throw_error(library.api, function, status);
  }
}

/* One counter for the whole program (an inline variable has a single
 * definition across translation units), read by swallowed_sink_exceptions(). */
inline std::atomic<std::uint64_t> swallowed_sink_exceptions{0};

/* The library orders a sink's registration before its calls, and every call
 * before an unregister that confirms the sink gone, with atomics of its own,
 * which ThreadSanitizer cannot see in an uninstrumented libkvzch. In a
 * process with the TSan runtime these restate the two edges on a
 * registration's SinkBox, so that a host's callable and what it captures
 * need no fences; elsewhere they do nothing. */
inline void sink_edge_release(void* box) noexcept {
  if (__tsan_release != nullptr) {
    __tsan_release(box);
  }
}

inline void sink_edge_acquire(void* box) noexcept {
  if (__tsan_acquire != nullptr) {
    __tsan_acquire(box);
  }
}

/* A registration's callable, behind a byte of its own at the box's address
 * (its first member, with no base before it), which the annotations use:
 * a mutex or atomic at the start of the callable is a synchronization
 * object of its own to TSan, which the sink's edges must not join. Freed by
 * the last of its holders to let go: the registration, and a library that
 * releases sinks itself (ABI 1.3), which lets go once the sink's last call
 * has returned, perhaps after the registration ended. */
template <class F>
struct SinkBox {
  char edge;
  std::atomic<unsigned> holders;
  F callable;
};

template <class F>
void sink_trampoline(void* box, const kvzch_batch_event* event) noexcept {
  sink_edge_acquire(box);
  try {
    static_cast<SinkBox<F>*>(box)->callable(*event);
  } catch (...) {
    swallowed_sink_exceptions.fetch_add(1, std::memory_order_relaxed);
  }
  sink_edge_release(box);
}

/* A holder lets go of the box: after the calls it was ordered after (the
 * edge), and the box is freed once its holders all have. */
template <class F>
void let_go_of_sink_box(void* box) noexcept {
  sink_edge_acquire(box);
  auto* const typed = static_cast<SinkBox<F>*>(box);
  if (typed->holders.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    delete typed;
  }
}

/* Histogram bounds as the Prometheus format needs them: finite, and strictly
 * ascending (two equal bounds would write one `le` sample twice). */
inline bool strictly_ascending_finite(const std::vector<double>& bounds) noexcept {
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      return false;
    }
  }
  return true;
}

/* The entry named `name` in `map` (a map from std::string to unique_ptr with
 * a transparent comparator), made by `make` on first use: looked up under a
 * shared lock of `mutex`, made and inserted under the exclusive one. Made
 * before it is inserted, so a `make` that throws leaves no entry behind. */
template <class Map, class Make>
auto& find_or_make(Map& map, std::shared_mutex& mutex, std::string_view name, Make make) {
  {
    const std::shared_lock<std::shared_mutex> lock(mutex);
    const auto it = map.find(name);
    if (it != map.end()) {
      return *it->second;
    }
  }
  const std::unique_lock<std::shared_mutex> lock(mutex);
  auto it = map.find(name);
  if (it == map.end()) {
    it = map.emplace(std::string(name), make()).first;
  }
  return *it->second;
}

/* `window` in seconds, or std::invalid_argument naming `owner` unless
 * 1 s <= window <= `longest`. */
inline std::size_t checked_window(const char* owner, std::chrono::seconds window,
                                  std::chrono::seconds longest) {
  if (window.count() < 1 || window > longest) {
    throw std::invalid_argument(std::string(owner) + ": window of " +
                                std::to_string(window.count()) + " s is not in 1.." +
                                std::to_string(longest.count()) + " s");
  }
  return static_cast<std::size_t>(window.count());
}

}  // namespace detail

/* How many exceptions sink callables have thrown (and the trampoline caught)
 * in this program: a sink has no caller to report to, so this is where a
 * host notices a broken one. */
[[nodiscard]] inline std::uint64_t swallowed_sink_exceptions() noexcept {
  return detail::swallowed_sink_exceptions.load(std::memory_order_relaxed);
}

enum class EvictionPolicy : std::uint32_t {
  None = KVZCH_EVICT_NONE,
  OldestTimestamp = KVZCH_EVICT_OLDEST_TIMESTAMP,
  LruApprox = KVZCH_EVICT_LRU_APPROX,
};

enum class MissPolicy : std::uint32_t {
  ZeroFill = KVZCH_MISS_ZERO_FILL,
  LeaveUntouched = KVZCH_MISS_LEAVE_UNTOUCHED,
};

/* Builder for kvzch_options. It keeps the name in its own string and patches
 * the pointer in raw(), so copies of an Options never share a dangling one. */
class Options {
 public:
  /* Zero-initialised with struct_size = sizeof(kvzch_options) rather than
   * filled by the library's kvzch_options_init: every default is zero, and
   * that 1.0 symbol fills only the 1.0 fields and says so in struct_size, so
   * this header's later fields would be ignored (docs/ABI_POLICY.md). */
  Options() noexcept { raw_.struct_size = sizeof(kvzch_options); }

  Options& row_bytes(std::uint32_t value) noexcept {
    raw_.row_bytes = value;
    return *this;
  }
  Options& num_shards(std::uint32_t value) noexcept {
    raw_.num_shards = value;
    return *this;
  }
  Options& miss_policy(MissPolicy value) noexcept {
    raw_.miss_policy = static_cast<std::uint32_t>(value);
    return *this;
  }
  Options& max_rows(std::uint64_t value) noexcept {
    raw_.max_rows = value;
    return *this;
  }
  Options& max_memory_bytes(std::uint64_t value) noexcept {
    raw_.max_memory_bytes = value;
    return *this;
  }
  /* ABI 1.1. Cache's constructor throws Unsupported, creating nothing, for a
   * policy other than NONE when the library lacks "capacity_eviction". */
  Options& eviction_policy(EvictionPolicy value) noexcept {
    raw_.eviction_policy = static_cast<std::uint32_t>(value);
    return *this;
  }
  Options& name(std::string value) {
    name_ = std::move(value);
    return *this;
  }

  /* Valid while this Options is alive and unchanged (name points into it). */
  [[nodiscard]] kvzch_options raw() const noexcept {
    kvzch_options out = raw_;
    out.name = name_ ? name_->c_str() : nullptr;
    return out;
  }

 private:
  kvzch_options raw_{};
  std::optional<std::string> name_;
};

class SinkRegistration;

/* A libkvzch seen through its plugin table: the one this program links, or
 * one loaded at run time. Caches and sink registrations made from a Library
 * call only through its table, so host code written against Cache works the
 * same on either. Copies share the library, which stays loaded until the
 * last Library, Cache or SinkRegistration using it is gone; moving copies
 * too, so there is no empty Library. */
class Library {
 public:
  /* The linked library. Referenced only by code that calls it, so a host
   * that only loads libraries at run time need not link libkvzch. */
  [[nodiscard]] static Library linked() {
    static const Library library = [] {
      auto state = std::make_shared<detail::LibraryState>();
      state->origin = "the linked libkvzch";
      detail::fill(*state, &kvzch_get_api);
      return Library(std::move(state));
    }();
    return library;
  }

  /* Loads the library at `path` (as dlopen finds it). RTLD_NOW, so a library
   * with unresolved symbols fails here rather than at some later call;
   * RTLD_LOCAL, so its symbols stay out of the process's namespace and two
   * builds can be loaded side by side. Throws Error (NOT_FOUND) when it
   * cannot be loaded, Unsupported when it has no kvzch_get_api or no ABI 1.x
   * table. */
  [[nodiscard]] static Library open(const std::string& path) {
    auto state = std::make_shared<detail::LibraryState>();
    state->origin = path;
    state->handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (state->handle == nullptr) {
      const char* const reason = dlerror();
      const std::string message =
          std::string("dlopen: ") + (reason != nullptr ? reason : "failed, giving no reason");
      throw Error(KVZCH_STATUS_NOT_FOUND, "NOT_FOUND: " + message, message);
    }
    void* const get_api = dlsym(state->handle, "kvzch_get_api");
    if (get_api == nullptr) {
      throw Unsupported(path + " has no kvzch_get_api: not a libkvzch, or one older than ABI 1.0");
    }
    detail::fill(*state, reinterpret_cast<detail::GetApi>(get_api));
    return Library(std::move(state));
  }

  Library(const Library&) noexcept = default;
  Library& operator=(const Library&) noexcept = default;
  ~Library() = default;

  /* kvzch_has_feature of this library ("stat_sink", ...); false also when
   * the library cannot answer. */
  [[nodiscard]] bool has(std::string_view feature) const {
    const auto has_feature = state_->api.has_feature;
    return has_feature != nullptr && has_feature(std::string(feature).c_str());
  }

  /* (major << 16) | minor of this library, which may be newer or older than
   * this header. */
  [[nodiscard]] std::uint32_t abi_version() const noexcept { return state_->api.abi_version; }

  [[nodiscard]] std::string version() const {
    return entry(&kvzch_api_v1::version, "kvzch_version")();
  }

  /* One entry of the table, for calls this header has no wrapper for:
   * library.entry(&kvzch_api_v1::stat_name, "kvzch_stat_name")(0). Throws
   * Unsupported when the library lacks it. */
  template <class Fn>
  [[nodiscard]] Fn entry(Fn kvzch_api_v1::*member, const char* function) const {
    return detail::entry(*state_, member, function);
  }

  /* The table as the library filled it; an entry it lacks is NULL. */
  [[nodiscard]] const kvzch_api_v1& api() const noexcept { return state_->api; }

  /* A sink that sees the batches of every cache of this library. */
  template <class F>
  [[nodiscard]] SinkRegistration on_any_batch(F&& callable) const;

 private:
  friend class Cache;
  template <class F>
  friend SinkRegistration register_sink(const Library& library, kvzch_cache* cache, F&& callable);

  explicit Library(detail::LibraryPtr state) noexcept : state_(std::move(state)) {}

  detail::LibraryPtr state_;
};

/* An active stat sink. Unregisters in unregister(), reset() and its
 * destructor; once the library confirms the sink is gone, the callable will
 * never be called again and is freed after its last call has returned. The
 * library refuses only one unregister, with KVZCH_STATUS_WOULD_DEADLOCK: one
 * made from inside a sink whose wait would close a cycle (two sinks
 * unregistering each other from inside themselves on two threads, or a sink
 * unregistering one that it runs under on its thread). unregister() reports
 * that and keeps the registration active, to be ended later from outside
 * the sinks; reset() and the destructor cannot, so the sink stays registered
 * and its callable is never freed. A registration from Cache::on_batch keeps
 * its cache alive: the cache is destroyed when the last of the Cache and its registrations ends
 * (but a refused reset() or destructor leaks its hold on the cache, so that
 * cache is never destroyed: dropping the hold then could destroy it inside
 * its own lookup). One made by register_sink on a kvzch_cache* must end
 * before that cache is destroyed. With a library that releases sinks itself
 * (Library::has("stat_sink_release"), ABI 1.3) a registration may be ended
 * from inside its own callable: the callable is freed as its last call
 * returns. The library may let go of it after the registration ended, on a
 * thread inside a lookup (of any cache, for a global sink), so what the
 * callable captures must not destroy a cache or unload the library as it is
 * destroyed. With an older library it may not (that would free the callable
 * while it runs). None may be ended, once its Cache is gone, from inside any
 * sink called for its cache's lookups (that could destroy the cache during
 * one). */
class [[nodiscard]] SinkRegistration {
 public:
  SinkRegistration() noexcept = default;
  SinkRegistration(const SinkRegistration&) = delete;
  SinkRegistration& operator=(const SinkRegistration&) = delete;
  SinkRegistration(SinkRegistration&& other) noexcept { swap(other); }
  SinkRegistration& operator=(SinkRegistration&& other) noexcept {
    if (this != &other) {
      reset();
      swap(other);
    }
    return *this;
  }
  ~SinkRegistration() { reset(); }

  /* Unregisters the sink and answers the library's status: KVZCH_STATUS_OK,
   * or NOT_FOUND when something else unregistered its id; either way the sink
   * is gone, the callable freed (or, from inside it, freed as it returns),
   * and the registration inactive. Any other
   * status (WOULD_DEADLOCK, see above) leaves the sink registered and this
   * registration active and unchanged. Inactive already: KVZCH_STATUS_OK. */
  [[nodiscard]] kvzch_status unregister() noexcept {
    if (!callable_) {
      return KVZCH_STATUS_OK;
    }
    /* register_sink checked that the library has these entries. */
    const kvzch_api_v1& api = library_->api;
    const kvzch_status status = cache_ != nullptr ? api.cache_unregister_stat_sink(cache_, id_)
                                                  : api.unregister_global_stat_sink(id_);
    if (status == KVZCH_STATUS_OK || status == KVZCH_STATUS_NOT_FOUND) {
      callable_.reset();
      forget();
    }
    return status;
  }

  /* Unregisters and leaves the registration inactive whatever the library
   * answers. When it refuses, it may still call the sink, so this
   * registration leaks its hold on the callable rather than freeing it (so
   * the callable is never freed, even once a library that releases sinks
   * itself lets go of its own hold), and its hold on its cache (from
   * Cache::on_batch):
   * the refusal comes from inside a sink, perhaps one called for that
   * cache's own lookup, and dropping the last hold there would destroy the
   * cache during it. */
  void reset() noexcept {
    if (unregister() != KVZCH_STATUS_OK && callable_) {
      static_cast<void>(callable_.release());
      /* Whether another owner remains cannot be known without racing it: one
       * on another thread may end between a use_count() and the release. */
      static_cast<void>(kept_cache_.release());
      forget();
    }
  }

  [[nodiscard]] bool active() const noexcept { return callable_ != nullptr; }
  explicit operator bool() const noexcept { return active(); }
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  template <class F>
  friend SinkRegistration register_sink(const Library& library, kvzch_cache* cache, F&& callable);

 private:
  friend class Cache;

  using Owned = std::unique_ptr<void, void (*)(void*) noexcept>;

  SinkRegistration(detail::LibraryPtr library, kvzch_cache* cache, std::uint64_t id,
                   Owned callable) noexcept
      : library_(std::move(library)), cache_(cache), id_(id), callable_(std::move(callable)) {}

  /* Drops what names the sink, once the callable is freed or leaked; the
   * cache it kept alive is destroyed here if nothing else holds it. */
  void forget() noexcept {
    cache_ = nullptr;
    id_ = 0;
    kept_cache_.reset();
    library_.reset();
  }

  void swap(SinkRegistration& other) noexcept {
    std::swap(library_, other.library_);
    std::swap(kept_cache_, other.kept_cache_);
    std::swap(cache_, other.cache_);
    std::swap(id_, other.id_);
    std::swap(callable_, other.callable_);
  }

  detail::LibraryPtr library_; /* keeps the library loaded while the sink may run */
  /* From Cache::on_batch: keeps cache_ alive until the sink is unregistered.
   * On the heap, allocated before registering, so that reset() can leak it
   * without allocating. */
  std::unique_ptr<std::shared_ptr<kvzch_cache>> kept_cache_;
  kvzch_cache* cache_ = nullptr; /* nullptr: a global sink */
  std::uint64_t id_ = 0;
  Owned callable_{nullptr, nullptr};
};

/* Registers `callable` (invocable with const kvzch_batch_event&) on `cache`,
 * a cache of `library`, or globally in `library` when `cache` is nullptr.
 * Every thread that calls batch_get calls it, at once, so it must be safe to
 * call concurrently. The callable lives on the heap so its address, handed to
 * the library as user_data, survives moves of the registration. */
template <class F>
SinkRegistration register_sink(const Library& library, kvzch_cache* cache, F&& callable) {
  using Callable = std::decay_t<F>;
  static_assert(std::is_invocable_v<Callable&, const kvzch_batch_event&>,
                "a sink callable must be invocable as f(const kvzch_batch_event&)");
  const detail::LibraryState& lib = *library.state_;
  /* Checked before registering: a sink that cannot be unregistered could
   * never free its callable. */
  if (cache != nullptr) {
    static_cast<void>(detail::entry(lib, &kvzch_api_v1::cache_unregister_stat_sink,
                                    "kvzch_cache_unregister_stat_sink"));
  } else {
    static_cast<void>(detail::entry(lib, &kvzch_api_v1::unregister_global_stat_sink,
                                    "kvzch_unregister_global_stat_sink"));
  }
  /* A library that releases sinks itself holds the callable too, from
   * registration until after the sink's last call. */
  const bool library_releases = cache != nullptr
                                    ? lib.api.cache_register_stat_sink_with_release != nullptr
                                    : lib.api.register_global_stat_sink_with_release != nullptr;
  SinkRegistration::Owned owned(
      new detail::SinkBox<Callable>{0, {library_releases ? 2u : 1u},
                                    Callable(std::forward<F>(callable))},
      &detail::let_go_of_sink_box<Callable>);
  detail::sink_edge_release(owned.get());
  const auto trampoline = &detail::sink_trampoline<Callable>;
  const auto release = &detail::let_go_of_sink_box<Callable>;
  std::uint64_t id = 0;
  try {
    if (cache != nullptr && library_releases) {
      detail::call(lib, &kvzch_api_v1::cache_register_stat_sink_with_release,
                   "kvzch_cache_register_stat_sink_with_release", cache, trampoline, owned.get(),
                   release, &id);
    } else if (cache != nullptr) {
      detail::call(lib, &kvzch_api_v1::cache_register_stat_sink,
                   "kvzch_cache_register_stat_sink", cache, trampoline, owned.get(), &id);
    } else if (library_releases) {
      detail::call(lib, &kvzch_api_v1::register_global_stat_sink_with_release,
                   "kvzch_register_global_stat_sink_with_release", trampoline, owned.get(),
                   release, &id);
    } else {
      detail::call(lib, &kvzch_api_v1::register_global_stat_sink,
                   "kvzch_register_global_stat_sink", trampoline, owned.get(), &id);
    }
  } catch (...) {
    /* A refused registration leaves the library no hold to let go of. */
    static_cast<detail::SinkBox<Callable>*>(owned.get())->holders.store(1, std::memory_order_relaxed);
    throw;
  }
  return SinkRegistration(library.state_, cache, id, std::move(owned));
}

/* The same, for a cache of the linked library (or globally in it). */
template <class F>
SinkRegistration register_sink(kvzch_cache* cache, F&& callable) {
  return register_sink(Library::linked(), cache, std::forward<F>(callable));
}

template <class F>
SinkRegistration Library::on_any_batch(F&& callable) const {
  return register_sink(*this, nullptr, std::forward<F>(callable));
}

/* A sink that sees the batches of every cache of the linked library. */
template <class F>
[[nodiscard]] SinkRegistration on_any_batch(F&& callable) {
  return Library::linked().on_any_batch(std::forward<F>(callable));
}

/* Owns one kvzch_cache, shared with the sink registrations made by on_batch:
 * the cache is destroyed when the last of them ends. Move-only; a moved-from
 * Cache has no handle and its calls throw Error(KVZCH_STATUS_NULL_ARGUMENT).
 * All calls may run concurrently from many threads, like the C functions
 * they wrap. A call the cache's library lacks throws Unsupported. */
class Cache {
 public:
  /* A cache of the linked library. */
  explicit Cache(const Options& options) : Cache(Library::linked(), options) {}

  /* A cache of `library`, which stays loaded while the cache lives. */
  Cache(const Library& library, const Options& options) : library_(library.state_) {
    /* Checked before creating: a cache must always be destroyable. */
    static_cast<void>(library.entry(&kvzch_api_v1::cache_destroy, "kvzch_cache_destroy"));
    const kvzch_options raw = options.raw();
    /* kvzch's 1.0 libraries refuse the policy's bytes, past their struct, as
     * an option they lack, but the contract only promises that they read
     * none of them: a policy they ignored would leave the cache unbounded. */
    if (raw.eviction_policy != KVZCH_EVICT_NONE && !library.has("capacity_eviction")) {
      throw Unsupported("an eviction policy needs \"capacity_eviction\", which " +
                        library.state_->origin + " lacks");
    }
    kvzch_cache* created = nullptr;
    call(&kvzch_api_v1::cache_create, "kvzch_cache_create", &raw, &created);
    /* Should the shared state's allocation throw, the deleter runs first. */
    handle_ = std::shared_ptr<kvzch_cache>(created, Deleter(library_));
    row_bytes_ = raw.row_bytes;
  }

  /* A moved-from Cache keeps its library, so that its calls fail there. */
  Cache(Cache&& other) noexcept
      : library_(other.library_), handle_(std::move(other.handle_)), row_bytes_(other.row_bytes_) {}
  Cache& operator=(Cache&& other) noexcept {
    library_ = other.library_;
    handle_ = std::move(other.handle_);
    row_bytes_ = other.row_bytes_;
    return *this;
  }
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  ~Cache() = default;

  void batch_set(const std::int64_t* ids, std::size_t n, const void* rows, std::size_t rows_len,
                 std::uint32_t timestamp) {
    call(&kvzch_api_v1::cache_batch_set, "kvzch_cache_batch_set", handle(), ids, n, rows,
         rows_len, timestamp);
  }

  [[nodiscard]] kvzch_batch_stats batch_get(const std::int64_t* ids, std::size_t n, void* out,
                                            std::size_t out_len, std::uint8_t* hit_mask = nullptr) {
    kvzch_batch_stats stats{};
    call(&kvzch_api_v1::cache_batch_get, "kvzch_cache_batch_get", handle(), ids, n, out, out_len,
         hit_mask, &stats);
    return stats;
  }

  [[nodiscard]] std::uint64_t batch_remove(const std::int64_t* ids, std::size_t n) {
    std::uint64_t removed = 0;
    call(&kvzch_api_v1::cache_batch_remove, "kvzch_cache_batch_remove", handle(), ids, n,
         &removed);
    return removed;
  }

  [[nodiscard]] std::uint64_t evict_older_than(std::uint32_t threshold) {
    std::uint64_t evicted = 0;
    call(&kvzch_api_v1::cache_evict_older_than, "kvzch_cache_evict_older_than", handle(),
         threshold, &evicted);
    return evicted;
  }

#ifdef KVZCH_HPP_HAS_SPAN
  void batch_set(std::span<const std::int64_t> ids, std::span<const std::byte> rows,
                 std::uint32_t timestamp) {
    batch_set(ids.data(), ids.size(), rows.data(), rows.size(), timestamp);
  }

  /* The C call takes no length for the mask, so a short one is caught here. */
  [[nodiscard]] kvzch_batch_stats batch_get(std::span<const std::int64_t> ids,
                                            std::span<std::byte> out,
                                            std::span<std::uint8_t> hit_mask = {}) {
    if (!hit_mask.empty() && hit_mask.size() < ids.size()) {
      const std::string message = "kvzch::Cache::batch_get: hit_mask.size() " +
                                  std::to_string(hit_mask.size()) + " < ids.size() " +
                                  std::to_string(ids.size());
      throw Error(KVZCH_STATUS_INVALID_ARGUMENT, "INVALID_ARGUMENT: " + message, message);
    }
    return batch_get(ids.data(), ids.size(), out.data(), out.size(),
                     hit_mask.empty() ? nullptr : hit_mask.data());
  }

  [[nodiscard]] std::uint64_t batch_remove(std::span<const std::int64_t> ids) {
    return batch_remove(ids.data(), ids.size());
  }
#endif

  /* Returns free memory to the operating system (ABI 1.1, feature "compact");
   * on an older library, throws Unsupported. */
  void compact() { call(&kvzch_api_v1::cache_compact, "kvzch_cache_compact", handle()); }

  /* Makes room for `additional_rows` rows beyond those stored, so that
   * publishing them grows nothing: call it before loading a table of known size
   * (ABI 1.2, feature "reserve"); on an older library, throws Unsupported.
   * Throws Error with KVZCH_STATUS_CAPACITY_EXCEEDED, changing nothing, when the
   * rows would not fit max_rows or max_memory_bytes. */
  void reserve(std::uint64_t additional_rows) {
    call(&kvzch_api_v1::cache_reserve, "kvzch_cache_reserve", handle(), additional_rows);
  }

  [[nodiscard]] kvzch_cache_info info() const {
    kvzch_cache_info out{};
    out.struct_size = sizeof(kvzch_cache_info);
    call(&kvzch_api_v1::cache_get_info, "kvzch_cache_get_info", handle(), &out);
    return out;
  }

  /* Counts since the previous call on this cache, and resets them. */
  [[nodiscard]] kvzch_read_stats read_hit_rate_stats() {
    kvzch_read_stats out{};
    call(&kvzch_api_v1::cache_get_read_hit_rate_stats, "kvzch_cache_get_read_hit_rate_stats",
         handle(), &out);
    return out;
  }

  /* Counts since creation; resets nothing, so any number of pollers agree. */
  [[nodiscard]] kvzch_read_stats cumulative_read_stats() const {
    kvzch_read_stats out{};
    call(&kvzch_api_v1::cache_get_cumulative_read_stats, "kvzch_cache_get_cumulative_read_stats",
         handle(), &out);
    return out;
  }

  [[nodiscard]] std::uint32_t row_bytes() const noexcept { return row_bytes_; }
  /* Valid while the Cache lives, and after it while a registration from
   * on_batch keeps the cache: for calls that return before the last one
   * ends. */
  [[nodiscard]] kvzch_cache* handle() const noexcept { return handle_.get(); }
  /* The library this cache belongs to, for its other calls (has(), entry()). */
  [[nodiscard]] Library library() const noexcept { return Library(library_); }

  /* Calls `callable` once per non-empty batch_get on this cache, on the
   * calling thread, until the returned registration ends. Threads that look
   * up at once call it at once, so it must be safe to call concurrently. */
  template <class F>
  [[nodiscard]] SinkRegistration on_batch(F&& callable) {
    /* register_sink reads a NULL cache as "every cache": a moved-from Cache
     * must fail like its other calls, not register a global sink. */
    if (handle() == nullptr) {
      const std::string message = "kvzch::Cache::on_batch: this Cache was moved from";
      throw Error(KVZCH_STATUS_NULL_ARGUMENT, "NULL_ARGUMENT: " + message, message);
    }
    auto kept_cache = std::make_unique<std::shared_ptr<kvzch_cache>>(handle_);
    SinkRegistration registration = register_sink(library(), handle(), std::forward<F>(callable));
    registration.kept_cache_ = std::move(kept_cache);
    return registration;
  }

 private:
  /* Holds the library, so a cache is destroyed by the library that made it,
   * before that library can be unloaded. */
  struct Deleter {
    explicit Deleter(detail::LibraryPtr lib) noexcept : library(std::move(lib)) {}
    Deleter(const Deleter&) noexcept = default;
    Deleter& operator=(const Deleter&) noexcept = default;
    ~Deleter() = default;
    void operator()(kvzch_cache* cache) const noexcept { library->api.cache_destroy(cache); }

    detail::LibraryPtr library;
  };

  template <class Fn, class... Args>
  void call(Fn kvzch_api_v1::*member, const char* function, Args... args) const {
    detail::call(*library_, member, function, args...);
  }

  /* Copied, not moved, by moves: a moved-from Cache still reaches its
   * library, and its calls fail there with NULL_ARGUMENT like any call on a
   * NULL cache. */
  detail::LibraryPtr library_;
  std::shared_ptr<kvzch_cache> handle_;
  std::uint32_t row_bytes_ = 0;
};

/* The canonical name of a 1.0 counter (KVZCH_STAT_READ_HIT_COUNT, ...) in
 * `library`: "kvzch.inference.read_hit_count", ... A static string of the
 * library, valid while it stays loaded. */
[[nodiscard]] inline std::string_view stat_name(const Library& library, std::uint32_t stat) {
  const char* name = library.entry(&kvzch_api_v1::stat_name, "kvzch_stat_name")(stat);
  if (name == nullptr) {
    const std::string message = "kvzch_stat_name: no name for a 1.0 counter";
    throw Error(KVZCH_STATUS_INTERNAL, "INTERNAL: " + message, message);
  }
  return name;
}

namespace detail {

/* The canonical names of the three 1.0 read counters in a library, held
 * with the library whose static strings they are. */
class CounterNames {
 public:
  static constexpr std::size_t kCounts = 3;

  explicit CounterNames(const Library& library)
      : library_(library),
        names_{stat_name(library, KVZCH_STAT_READ_HIT_COUNT),
               stat_name(library, KVZCH_STAT_READ_MISS_COUNT),
               stat_name(library, KVZCH_STAT_READ_TOTAL_COUNT)} {}

  /* add(name, value) for each count of `event`: hits, misses, total. */
  template <class Add>
  void for_each(const kvzch_batch_event& event, Add&& add) const {
    const std::uint64_t values[kCounts] = {event.stats.hits, event.stats.misses,
                                           event.stats.total};
    for (std::size_t i = 0; i < kCounts; ++i) {
      add(names_[i], static_cast<std::int64_t>(values[i]));
    }
  }

 private:
  Library library_;
  std::string_view names_[kCounts];
};

}  // namespace detail

/* Turns each batch event into the three fb303-style calls a predictor
 * exports, add_stat_value(name, value), under the canonical counter names
 * the library reports (kvzch_stat_name), so dashboards keyed on the upstream
 * names keep working. */
template <class AddStatValue>
class StatAdapter {
 public:
  explicit StatAdapter(AddStatValue add_stat_value, const Library& library = Library::linked())
      : add_(std::move(add_stat_value)), names_(library) {}

  void operator()(const kvzch_batch_event& event) { names_.for_each(event, add_); }

 private:
  AddStatValue add_;
  detail::CounterNames names_;
};

/* cache.on_batch(kvzch::fb303_style([&](std::string_view name, int64_t v) {
 *   stats.add_stat_value(name, v); })) */
template <class AddStatValue>
[[nodiscard]] StatAdapter<std::decay_t<AddStatValue>> fb303_style(AddStatValue&& add_stat_value) {
  return StatAdapter<std::decay_t<AddStatValue>>(std::forward<AddStatValue>(add_stat_value));
}

/* The same, with the counter names of `library`. */
template <class AddStatValue>
[[nodiscard]] StatAdapter<std::decay_t<AddStatValue>> fb303_style(const Library& library,
                                                                  AddStatValue&& add_stat_value) {
  return StatAdapter<std::decay_t<AddStatValue>>(std::forward<AddStatValue>(add_stat_value),
                                                 library);
}

namespace detail {

/* The additions of TableStatAdapter, apart from what they are added to. */
class TableStatNames {
 public:
  /* Additions per batch event: each count under two names. */
  static constexpr std::size_t kAdditions = 2 * CounterNames::kCounts;

  explicit TableStatNames(const Library& library) : counters_(library) {}

  /* add(name, value) for each count of `event`, under the canonical name and
   * then the per-table one; `name` is valid only during the call. */
  template <class Add>
  void for_each(const kvzch_batch_event& event, Add&& add) const {
    const std::string_view table = event.table;
    /* One buffer reused for the per-table names. */
    std::string per_table;
    counters_.for_each(event, [&](std::string_view name, std::int64_t value) {
      add(name, value);
      per_table.assign(name).append(1, '.').append(table);
      add(std::string_view(per_table), value);
    });
  }

 private:
  CounterNames counters_;
};

}  // namespace detail

/* Like StatAdapter, and each count a second time under a per-table name, the
 * canonical one with ".<table>" appended
 * ("kvzch.inference.read_hit_count.user"), so a host breaks the hit rate down
 * by model table while the aggregate names keep meaning what upstream's did.
 * Like every sink it runs on many request threads at once; it keeps no
 * mutable state of its own. */
template <class AddStatValue>
class TableStatAdapter {
 public:
  explicit TableStatAdapter(AddStatValue add_stat_value,
                            const Library& library = Library::linked())
      : add_(std::move(add_stat_value)), names_(library) {}

  void operator()(const kvzch_batch_event& event) { names_.for_each(event, add_); }

 private:
  AddStatValue add_;
  detail::TableStatNames names_;
};

/* cache.on_batch(kvzch::fb303_style_by_table([&](std::string_view name, int64_t v) {
 *   stats.add_stat_value(name, v); })) */
template <class AddStatValue>
[[nodiscard]] TableStatAdapter<std::decay_t<AddStatValue>> fb303_style_by_table(
    AddStatValue&& add_stat_value) {
  return TableStatAdapter<std::decay_t<AddStatValue>>(std::forward<AddStatValue>(add_stat_value));
}

/* The same, with the counter names of `library`. */
template <class AddStatValue>
[[nodiscard]] TableStatAdapter<std::decay_t<AddStatValue>> fb303_style_by_table(
    const Library& library, AddStatValue&& add_stat_value) {
  return TableStatAdapter<std::decay_t<AddStatValue>>(std::forward<AddStatValue>(add_stat_value),
                                                      library);
}

/* One counter summed over a sliding window of whole seconds and over all
 * time: what fb303 exports for a stat of type SUM. Per-second buckets in a
 * ring one second longer than the longest window, so that a sum at the
 * second before the latest addition's (a reader that read the clock just
 * before a writer did) still finds the window's first second; a sum further
 * behind may miss its oldest seconds. One mutex, held for an addition or a
 * sum's pass over the ring. */
class WindowedSum {
 public:
  using Clock = std::chrono::steady_clock;

  /* Throws std::invalid_argument for a window under 1 s or over max_window(). */
  explicit WindowedSum(std::chrono::seconds longest_window = std::chrono::seconds(60))
      : longest_(detail::checked_window("kvzch::WindowedSum", longest_window, max_window())),
        buckets_(longest_ + 1) {}

  /* The longest window whose ring, a bucket a second and one more, a vector
   * can hold. Memory may run out well before: 16 bytes a second. */
  [[nodiscard]] static std::chrono::seconds max_window() noexcept {
    const std::size_t buckets = std::vector<Bucket>().max_size();
    const auto most = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
    return std::chrono::seconds(static_cast<std::int64_t>(std::min(buckets, most) - 1));
  }

  /* Now, read under the lock, so additions land in their seconds in order. */
  void add(std::int64_t value) {
    const std::lock_guard<std::mutex> lock(mutex_);
    add_locked(value, second_of(Clock::now()));
  }

  /* At `now`, for hosts and tests that keep their own time. An addition
   * stamped before the latest one counts in the latest one's second: the
   * buckets only move forward, so nothing already counted is overwritten. */
  void add(std::int64_t value, Clock::time_point now) {
    const std::lock_guard<std::mutex> lock(mutex_);
    add_locked(value, second_of(now));
  }

  /* The sum over the `window` seconds ending with the one holding `now`.
   * Throws std::invalid_argument unless 1 s <= window <= the longest. */
  [[nodiscard]] std::int64_t sum(std::chrono::seconds window,
                                 Clock::time_point now = Clock::now()) const {
    const auto span = static_cast<std::int64_t>(
        detail::checked_window("kvzch::WindowedSum", window, longest_window()));
    const std::int64_t second = second_of(now);
    const std::lock_guard<std::mutex> lock(mutex_);
    std::int64_t out = 0;
    for (const Bucket& bucket : buckets_) {
      if (bucket.second <= second && bucket.second > second - span) {
        out += bucket.value;
      }
    }
    return out;
  }

  /* Every value ever added. */
  [[nodiscard]] std::int64_t total() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return total_;
  }

  [[nodiscard]] std::chrono::seconds longest_window() const noexcept {
    return std::chrono::seconds(static_cast<std::int64_t>(longest_));
  }

 private:
  struct Bucket {
    std::int64_t second = std::numeric_limits<std::int64_t>::min(); /* no second yet */
    std::int64_t value = 0;
  };

  static std::int64_t second_of(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  }

  void add_locked(std::int64_t value, std::int64_t second) {
    second = std::max(second, latest_);
    latest_ = second;
    const auto length = static_cast<std::int64_t>(buckets_.size());
    Bucket& bucket = buckets_[static_cast<std::size_t>(((second % length) + length) % length)];
    if (bucket.second != second) {
      bucket = Bucket{second, 0};
    }
    bucket.value += value;
    total_ += value;
  }

  mutable std::mutex mutex_;
  std::size_t longest_;
  std::vector<Bucket> buckets_;
  std::int64_t latest_ = std::numeric_limits<std::int64_t>::min();
  std::int64_t total_ = 0;
};

/* An fb303-shaped stats registry for a host without fb303: add_stat_value
 * feeds a WindowedSum per name, created on first use, and counters() exports
 * them the way fb303's getCounters() does for ExportType::SUM:
 * "<name>.sum.<window>" per window (".sum.60") and "<name>.sum" for all time.
 * Safe from any number of threads; request threads take a shared lock to
 * find a name (exclusive only when a new name appears), then that name's
 * WindowedSum's mutex: threads adding to one name take turns on it. */
class SumStats {
 public:
  using Clock = WindowedSum::Clock;

  /* Throws std::invalid_argument for a window under 1 s or over
   * WindowedSum::max_window(). Each name's ring is allocated when the name is
   * first added: if that throws (std::bad_alloc), the addition throws and the
   * name stays unknown, and the next addition tries again. */
  explicit SumStats(std::vector<std::chrono::seconds> windows = {std::chrono::seconds(60)})
      : windows_(std::move(windows)) {
    for (const std::chrono::seconds window : windows_) {
      static_cast<void>(
          detail::checked_window("kvzch::SumStats", window, WindowedSum::max_window()));
      longest_ = std::max(longest_, window);
    }
  }
  /* SumStats({}) keeps no window (only "<name>.sum"), SumStats({60s, 600s})
   * those two. Without it, {} would also match the deleted copy constructor. */
  explicit SumStats(std::initializer_list<std::chrono::seconds> windows)
      : SumStats(std::vector<std::chrono::seconds>(windows)) {}

  void add_stat_value(std::string_view name, std::int64_t value) { stat(name).add(value); }
  void add_stat_value(std::string_view name, std::int64_t value, Clock::time_point now) {
    stat(name).add(value, now);
  }

  /* 0 for a name never added. Throws std::invalid_argument for a window
   * longer than the longest this registry keeps. */
  [[nodiscard]] std::int64_t sum(std::string_view name, std::chrono::seconds window,
                                 Clock::time_point now = Clock::now()) const {
    static_cast<void>(detail::checked_window("kvzch::SumStats", window, longest_));
    const std::shared_lock<std::shared_mutex> lock(mutex_);
    const auto it = stats_.find(name);
    return it == stats_.end() ? 0 : it->second->sum(window, now);
  }

  /* All time; 0 for a name never added. */
  [[nodiscard]] std::int64_t total(std::string_view name) const {
    const std::shared_lock<std::shared_mutex> lock(mutex_);
    const auto it = stats_.find(name);
    return it == stats_.end() ? 0 : it->second->total();
  }

  /* Every exported counter by its exported name, like fb303's getCounters(). */
  [[nodiscard]] std::map<std::string, std::int64_t> counters(
      Clock::time_point now = Clock::now()) const {
    std::map<std::string, std::int64_t> out;
    const std::shared_lock<std::shared_mutex> lock(mutex_);
    for (const auto& [name, stat] : stats_) {
      for (const std::chrono::seconds window : windows_) {
        out.emplace(name + ".sum." + std::to_string(window.count()), stat->sum(window, now));
      }
      out.emplace(name + ".sum", stat->total());
    }
    return out;
  }

  /* A sink that feeds this registry under the canonical and the per-table
   * names (fb303_style_by_table). The registry must outlive the registration.
   * A batch's six additions are made all or none: every name is found or
   * made before the first is added to, so a new name's ring that cannot be
   * allocated (std::bad_alloc, counted by swallowed_sink_exceptions()) adds
   * nothing (names made before it stay, at 0), and hits and misses still add
   * up to totals. A sum read meanwhile on another thread may see part of a
   * batch, as between any two additions. */
  [[nodiscard]] auto sink(const Library& library = Library::linked()) {
    return [this, names = detail::TableStatNames(library)](const kvzch_batch_event& event) {
      std::pair<WindowedSum*, std::int64_t> additions[detail::TableStatNames::kAdditions];
      std::size_t found = 0;
      names.for_each(event, [&](std::string_view name, std::int64_t value) {
        additions[found++] = {&stat(name), value};
      });
      const Clock::time_point now = Clock::now();
      for (std::size_t i = 0; i < found; ++i) {
        additions[i].first->add(additions[i].second, now);
      }
    };
  }

 private:
  WindowedSum& stat(std::string_view name) {
    return detail::find_or_make(stats_, mutex_, name,
                                [this] { return std::make_unique<WindowedSum>(longest_); });
  }

  std::vector<std::chrono::seconds> windows_;
  /* A registry without windows still keeps one bucket: WindowedSum needs one. */
  std::chrono::seconds longest_{1};
  mutable std::shared_mutex mutex_;
  /* Entries are never removed and live on the heap, so a reference handed
   * out under the shared lock stays valid after it is released. */
  std::map<std::string, std::unique_ptr<WindowedSum>, std::less<>> stats_;
};

/* A Prometheus metric name from an fb303-style one: every character outside
 * [A-Za-z0-9_] becomes '_' (':' too, which Prometheus keeps for recording
 * rules), and a name that is empty or starts with a digit gets a leading '_'.
 * "kvzch.inference.read_hit_count" -> "kvzch_inference_read_hit_count". */
[[nodiscard]] inline std::string prometheus_name(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 1);
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) {
    out.push_back('_');
  }
  for (const char c : name) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '_';
    out.push_back(keep ? c : '_');
  }
  return out;
}

/* The same, with the "_total" suffix Prometheus expects on a counter:
 * "kvzch.inference.read_hit_count" -> "kvzch_inference_read_hit_count_total". */
[[nodiscard]] inline std::string prometheus_counter_name(std::string_view name) {
  std::string out = prometheus_name(name);
  constexpr std::string_view suffix = "_total";
  if (out.size() < suffix.size() ||
      out.compare(out.size() - suffix.size(), suffix.size(), suffix) != 0) {
    out += suffix;
  }
  return out;
}

/* A scrape in the Prometheus text exposition format 0.0.4, built sample by
 * sample: samples of one metric are gathered under a single # HELP and # TYPE
 * in the order the metrics first appear, whatever order they are added in,
 * as the format requires. Names are checked, label values and help escaped;
 * integers are written exactly, so counters compare exactly. */
class PrometheusText {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  /* The Content-Type of a /metrics response in this format. */
  static constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

  template <class T>
  void counter(std::string_view name, std::string_view help, const Labels& labels, T value) {
    family(name, "counter", help).samples += sample(name, labels, format(value));
  }

  template <class T>
  void gauge(std::string_view name, std::string_view help, const Labels& labels, T value) {
    family(name, "gauge", help).samples += sample(name, labels, format(value));
  }

  /* `counts[i]` observations fell in (upper_bounds[i-1], upper_bounds[i]],
   * the last one above every bound; so counts has one more entry than the
   * ascending upper_bounds. Written cumulatively, with _sum and _count. */
  void histogram(std::string_view name, std::string_view help, const Labels& labels,
                 const std::vector<double>& upper_bounds, const std::vector<std::uint64_t>& counts,
                 double sum) {
    if (counts.size() != upper_bounds.size() + 1 ||
        !detail::strictly_ascending_finite(upper_bounds)) {
      throw std::invalid_argument("kvzch::PrometheusText: histogram " + std::string(name) +
                                  " needs finite, strictly ascending bounds and one count more "
                                  "than bounds");
    }
    for (const auto& label : labels) {
      if (label.first == "le") {
        throw std::invalid_argument("kvzch::PrometheusText: histogram " + std::string(name) +
                                    " may not have a label \"le\"");
      }
    }
    /* Every sample is made, and its labels checked, before the family is
     * found or added, so a refused histogram leaves the text as it was. */
    std::string samples;
    const std::string bucket = std::string(name) + "_bucket";
    Labels with_le = labels;
    with_le.emplace_back("le", "");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      cumulative += counts[i];
      with_le.back().second = i < upper_bounds.size() ? format(upper_bounds[i]) : "+Inf";
      samples += sample(bucket, with_le, format(cumulative));
    }
    samples += sample(std::string(name) + "_sum", labels, format(sum));
    samples += sample(std::string(name) + "_count", labels, format(cumulative));
    family(name, "histogram", help).samples += samples;
  }

  [[nodiscard]] std::string str() const {
    std::string out;
    for (const Family& f : families_) {
      out += "# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
      out += f.samples;
    }
    return out;
  }

 private:
  struct Family {
    std::string name;
    std::string type;
    std::string help; /* escaped */
    std::string samples;
  };

  static bool valid_name(std::string_view name, bool label) {
    if (name.empty() || (name.front() >= '0' && name.front() <= '9') ||
        (label && name.substr(0, 2) == "__")) {
      return false;
    }
    return std::all_of(name.begin(), name.end(), [label](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || (!label && c == ':');
    });
  }

  Family& family(std::string_view name, std::string_view type, std::string_view help) {
    if (!valid_name(name, false)) {
      throw std::invalid_argument("kvzch::PrometheusText: bad metric name \"" + std::string(name) +
                                  "\"");
    }
    for (Family& f : families_) {
      if (f.name == name) {
        if (f.type != type) {
          throw std::invalid_argument("kvzch::PrometheusText: " + std::string(name) + " is a " +
                                      f.type + ", not a " + std::string(type));
        }
        return f;
      }
    }
    std::string escaped;
    for (const char c : help) {
      escaped += c == '\\' ? "\\\\" : c == '\n' ? "\\n" : std::string(1, c);
    }
    families_.push_back(Family{std::string(name), std::string(type), std::move(escaped), {}});
    return families_.back();
  }

  static std::string sample(std::string_view name, const Labels& labels, const std::string& value) {
    std::string out(name);
    if (!labels.empty()) {
      out += '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (!valid_name(labels[i].first, true)) {
          throw std::invalid_argument("kvzch::PrometheusText: bad label name \"" +
                                      labels[i].first + "\"");
        }
        out += (i == 0 ? "" : ",") + labels[i].first + "=\"";
        for (const char c : labels[i].second) {
          out += c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : std::string(1, c);
        }
        out += '"';
      }
      out += '}';
    }
    return out + " " + value + "\n";
  }

  template <class T>
  static std::string format(T value) {
    static_assert(std::is_arithmetic_v<T>, "a sample value is a number");
    if constexpr (std::is_integral_v<T>) {
      return std::to_string(value);
    } else {
      return format_double(static_cast<double>(value));
    }
  }

  /* The shortest of %.15g..%.17g that reads back as the same double, with
   * '.' for the decimal point whatever locale the host has set: a decimal
   * comma, or a point of several bytes (ps_AF's U+066B), would make the
   * scrape unparseable. std::to_chars never looks at the locale; standard
   * libraries without it for floating point (libstdc++ before 11) take
   * snprintf's text and put '.' in place of the C locale's point. Defining
   * KVZCH_HPP_FORMAT_WITH_SNPRINTF chooses that path anyway. */
  static std::string format_double(double value) {
    if (std::isnan(value)) {
      return "NaN";
    }
    if (std::isinf(value)) {
      return value > 0 ? "+Inf" : "-Inf";
    }
    char buf[32];
#if defined(__cpp_lib_to_chars) && !defined(KVZCH_HPP_FORMAT_WITH_SNPRINTF)
    for (int precision = 15;; ++precision) {
      const char* const end =
          std::to_chars(buf, buf + sizeof buf, value, std::chars_format::general, precision).ptr;
      double read_back = 0;
      std::from_chars(buf, end, read_back);
      if (precision == 17 || read_back == value) {
        return std::string(buf, static_cast<std::size_t>(end - buf));
      }
    }
#else
    for (int precision = 15;; ++precision) {
      std::snprintf(buf, sizeof buf, "%.*g", precision, value);
      if (precision == 17 || std::strtod(buf, nullptr) == value) {
        break;
      }
    }
    std::string out(buf);
    const std::string_view point = std::localeconv()->decimal_point;
    const std::size_t at = out.find(point);
    if (!point.empty() && at != std::string::npos) {
      out.replace(at, point.size(), ".");
    }
    return out;
#endif
  }

  std::vector<Family> families_;
};

/* The Prometheus side of the sink: per table, the three read counters under
 * the library's canonical names mapped to Prometheus
 * (kvzch_inference_read_hit_count_total{table="user"}, ..._miss_...,
 * ..._total_count_total) and a histogram of the lookup time of each batch
 * (kvzch_inference_batch_duration_seconds{table="user"}). record() runs on
 * every request thread at once and takes a shared lock only to find the
 * table; write() renders a scrape. The total is written as hits + misses of
 * the same read, so every scrape has hits + misses == total. */
class PrometheusReadStats {
 public:
  static constexpr std::string_view duration_name = "kvzch_inference_batch_duration_seconds";

  /* 10 us .. 250 ms: a batch of a few hundred ids takes tens of microseconds. */
  [[nodiscard]] static std::vector<double> default_duration_bounds() {
    return {1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
            2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25};
  }

  /* Throws std::invalid_argument unless the bounds are finite, positive,
   * strictly ascending and at most 9e9 s (their nanoseconds fit int64). */
  explicit PrometheusReadStats(
      const Library& library = Library::linked(),
      std::vector<double> duration_bounds_seconds = default_duration_bounds())
      : names_{prometheus_counter_name(stat_name(library, KVZCH_STAT_READ_HIT_COUNT)),
               prometheus_counter_name(stat_name(library, KVZCH_STAT_READ_MISS_COUNT)),
               prometheus_counter_name(stat_name(library, KVZCH_STAT_READ_TOTAL_COUNT))},
        bounds_(std::move(duration_bounds_seconds)) {
    if (!detail::strictly_ascending_finite(bounds_) ||
        (!bounds_.empty() && !(bounds_.front() > 0 && bounds_.back() <= 9e9))) {
      throw std::invalid_argument(
          "kvzch::PrometheusReadStats: bounds must be finite, positive, strictly ascending and "
          "at most 9e9 s");
    }
    for (const double bound : bounds_) {
      bounds_ns_.push_back(static_cast<std::uint64_t>(std::llround(bound * 1e9)));
    }
  }

  /* Exports the table with zero counts before its first batch, so a rate()
   * over its counters has a starting point. */
  void add_table(std::string_view table) { static_cast<void>(state(table)); }

  void record(const kvzch_batch_event& event) {
    Table& table = state(event.table);
    table.hits.fetch_add(event.stats.hits, std::memory_order_relaxed);
    table.misses.fetch_add(event.stats.misses, std::memory_order_relaxed);
    const std::size_t bucket = static_cast<std::size_t>(
        std::lower_bound(bounds_ns_.begin(), bounds_ns_.end(), event.stats.duration_ns) -
        bounds_ns_.begin());
    table.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
    table.duration_ns.fetch_add(event.stats.duration_ns, std::memory_order_relaxed);
  }

  /* For cache.on_batch / library.on_any_batch; this object must outlive the
   * registration. */
  [[nodiscard]] auto sink() {
    return [this](const kvzch_batch_event& event) { record(event); };
  }

  struct Counts {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t total = 0;
    std::uint64_t batches = 0;
  };

  /* What a scrape would show for `table` now; zeros for a table never seen. */
  [[nodiscard]] Counts counts(std::string_view table) const {
    const std::shared_lock<std::shared_mutex> lock(mutex_);
    const auto it = tables_.find(table);
    return it == tables_.end() ? Counts{} : snapshot(*it->second).counts;
  }

  /* Appends every table's counters and histogram to `out`. */
  void write(PrometheusText& out) const {
    const std::shared_lock<std::shared_mutex> lock(mutex_);
    for (const auto& [name, table] : tables_) {
      const Snapshot s = snapshot(*table);
      const PrometheusText::Labels labels = {{"table", name}};
      out.counter(names_[0], "Ids found by batch_get, by table.", labels, s.counts.hits);
      out.counter(names_[1], "Ids batch_get did not find, by table.", labels, s.counts.misses);
      out.counter(names_[2], "Ids looked up by batch_get, by table.", labels, s.counts.total);
      out.histogram(duration_name, "Lookup time of one batch_get, by table.", labels, bounds_,
                    s.buckets, static_cast<double>(s.duration_ns) / 1e9);
    }
  }

 private:
  struct Table {
    explicit Table(std::size_t bucket_count)
        : buckets(std::make_unique<std::atomic<std::uint64_t>[]>(bucket_count)) {}
    std::atomic<std::uint64_t> hits{0};
    std::atomic<std::uint64_t> misses{0};
    std::atomic<std::uint64_t> duration_ns{0};
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets; /* one per bound, then the overflow */
  };

  struct Snapshot {
    Counts counts;
    std::vector<std::uint64_t> buckets;
    std::uint64_t duration_ns = 0;
  };

  Snapshot snapshot(const Table& table) const {
    Snapshot s;
    s.counts.hits = table.hits.load(std::memory_order_relaxed);
    s.counts.misses = table.misses.load(std::memory_order_relaxed);
    s.counts.total = s.counts.hits + s.counts.misses;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
      s.buckets.push_back(table.buckets[i].load(std::memory_order_relaxed));
      s.counts.batches += s.buckets.back();
    }
    s.duration_ns = table.duration_ns.load(std::memory_order_relaxed);
    return s;
  }

  Table& state(std::string_view table) {
    return detail::find_or_make(tables_, mutex_, table,
                                [this] { return std::make_unique<Table>(bounds_.size() + 1); });
  }

  std::string names_[3]; /* hit, miss, total */
  std::vector<double> bounds_;
  std::vector<std::uint64_t> bounds_ns_;
  mutable std::shared_mutex mutex_;
  /* Never removed, on the heap: references outlive the shared lock. */
  std::map<std::string, std::unique_ptr<Table>, std::less<>> tables_;
};

/* The gauges of one cache's kvzch_cache_info, labelled with its table:
 * kvzch_cache_rows and kvzch_cache_memory_bytes. */
inline void write_cache_info(PrometheusText& out, std::string_view table,
                             const kvzch_cache_info& info) {
  const PrometheusText::Labels labels = {{"table", std::string(table)}};
  out.gauge("kvzch_cache_rows", "Rows the cache holds.", labels, info.rows);
  out.gauge("kvzch_cache_memory_bytes",
            "Bytes the cache holds: rows, metadata, index and free space.", labels,
            info.memory_bytes);
}

}  // inline namespace v1_3_0
}  // namespace kvzch

#endif /* __cpp_exceptions */
#endif /* KVZCH_HPP */
