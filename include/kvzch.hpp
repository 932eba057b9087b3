/*
 * kvzch.hpp - C++17 RAII layer over the kvzch C ABI (kvzch.h).
 *
 * Header-only, so it adds no symbols of its own to the library's ABI: every
 * call below ends in a kvzch_* function of the loaded libkvzch, and a host
 * built with this header works with any libkvzch of the same ABI major.
 *
 * Failures throw kvzch::Error (status + the library's message). Sink
 * callables may throw: the trampoline catches everything, because an
 * exception unwinding through the Rust frames of batch_get is undefined.
 */
#ifndef KVZCH_HPP
#define KVZCH_HPP

#include "kvzch.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#if __cplusplus >= 202002L && defined(__has_include)
#if __has_include(<span>)
#include <span>
#define KVZCH_HPP_HAS_SPAN 1
#endif
#endif

namespace kvzch {

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

namespace detail {

/* The last error is per thread, so this must run on the thread that saw the
 * failure and before any other kvzch_* call there. */
inline std::string last_error_message() {
  std::string buf(kvzch_last_error_message(nullptr, 0) + 1, '\0');
  const std::size_t full = kvzch_last_error_message(buf.data(), buf.size());
  buf.resize(std::min(full, buf.size() - 1));
  return buf;
}

/* what() is "STATUS: message"; the library's message already starts with the
 * function that failed, so the function name is added only when there is no
 * message to carry it. */
[[noreturn]] inline void throw_error(const char* function, kvzch_status status) {
  std::string message = last_error_message();
  std::string what = kvzch_status_name(status);
  what += ": ";
  what += message.empty() ? std::string(function) : message;
  throw Error(status, what, std::move(message));
}

inline void check(const char* function, kvzch_status status) {
  if (status != KVZCH_STATUS_OK) {
    throw_error(function, status);
  }
}

/* One counter for the whole program (an inline variable has a single
 * definition across translation units), read by swallowed_sink_exceptions(). */
inline std::atomic<std::uint64_t> swallowed_sink_exceptions{0};

template <class F>
void sink_trampoline(void* user_data, const kvzch_batch_event* event) noexcept {
  try {
    (*static_cast<F*>(user_data))(*event);
  } catch (...) {
    swallowed_sink_exceptions.fetch_add(1, std::memory_order_relaxed);
  }
}

template <class F>
void delete_callable(void* callable) noexcept {
  delete static_cast<F*>(callable);
}

}  // namespace detail

/* How many exceptions sink callables have thrown (and the trampoline caught)
 * in this program: a sink has no caller to report to, so this is where a
 * host notices a broken one. */
[[nodiscard]] inline std::uint64_t swallowed_sink_exceptions() noexcept {
  return detail::swallowed_sink_exceptions.load(std::memory_order_relaxed);
}

enum class MissPolicy : std::uint32_t {
  ZeroFill = KVZCH_MISS_ZERO_FILL,
  LeaveUntouched = KVZCH_MISS_LEAVE_UNTOUCHED,
};

/* Builder for kvzch_options. It keeps the name in its own string and patches
 * the pointer in raw(), so copies of an Options never share a dangling one. */
class Options {
 public:
  /* Zero-initialised with struct_size = sizeof(kvzch_options) rather than
   * filled by kvzch_options_init: every 1.0 default is zero, and a newer
   * library's kvzch_options_init writes its own, larger sizeof into this
   * struct, past the end of what this header compiled. */
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

/* An active stat sink. Unregisters in reset() and in its destructor; when
 * either returns, the callable is not running anywhere and has been freed.
 * A registration on a cache must end before that Cache is destroyed, and
 * must not be reset from inside its own callable (that would free the
 * callable while it runs). */
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

  void reset() noexcept {
    if (!callable_) {
      return;
    }
    const kvzch_status status = cache_ != nullptr ? kvzch_cache_unregister_stat_sink(cache_, id_)
                                                  : kvzch_unregister_global_stat_sink(id_);
    if (status == KVZCH_STATUS_OK || status == KVZCH_STATUS_NOT_FOUND) {
      callable_.reset();
    } else {
      /* The library could not confirm the sink is gone; it might still call
       * it, so leaking the callable is the only safe choice. */
      static_cast<void>(callable_.release());
    }
    cache_ = nullptr;
    id_ = 0;
  }

  [[nodiscard]] bool active() const noexcept { return callable_ != nullptr; }
  explicit operator bool() const noexcept { return active(); }
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  template <class F>
  friend SinkRegistration register_sink(kvzch_cache* cache, F&& callable);

 private:
  using Owned = std::unique_ptr<void, void (*)(void*) noexcept>;

  SinkRegistration(kvzch_cache* cache, std::uint64_t id, Owned callable) noexcept
      : cache_(cache), id_(id), callable_(std::move(callable)) {}

  void swap(SinkRegistration& other) noexcept {
    std::swap(cache_, other.cache_);
    std::swap(id_, other.id_);
    std::swap(callable_, other.callable_);
  }

  kvzch_cache* cache_ = nullptr; /* nullptr: a global sink */
  std::uint64_t id_ = 0;
  Owned callable_{nullptr, nullptr};
};

/* Registers `callable` (invocable with const kvzch_batch_event&) on `cache`,
 * or globally when `cache` is nullptr. The callable lives on the heap so its
 * address, handed to the library as user_data, survives moves of the
 * registration. */
template <class F>
SinkRegistration register_sink(kvzch_cache* cache, F&& callable) {
  using Callable = std::decay_t<F>;
  static_assert(std::is_invocable_v<Callable&, const kvzch_batch_event&>,
                "a sink callable must be invocable as f(const kvzch_batch_event&)");
  SinkRegistration::Owned owned(new Callable(std::forward<F>(callable)),
                                &detail::delete_callable<Callable>);
  std::uint64_t id = 0;
  if (cache != nullptr) {
    detail::check("kvzch_cache_register_stat_sink",
                  kvzch_cache_register_stat_sink(cache, &detail::sink_trampoline<Callable>,
                                                 owned.get(), &id));
  } else {
    detail::check("kvzch_register_global_stat_sink",
                  kvzch_register_global_stat_sink(&detail::sink_trampoline<Callable>,
                                                  owned.get(), &id));
  }
  return SinkRegistration(cache, id, std::move(owned));
}

/* A sink that sees the batches of every cache in the process. */
template <class F>
[[nodiscard]] SinkRegistration on_any_batch(F&& callable) {
  return register_sink(nullptr, std::forward<F>(callable));
}

/* Owns one kvzch_cache. Move-only; a moved-from Cache has no handle and its
 * calls throw Error(KVZCH_STATUS_NULL_ARGUMENT). All calls may run
 * concurrently from many threads, like the C functions they wrap. */
class Cache {
 public:
  explicit Cache(const Options& options) {
    const kvzch_options raw = options.raw();
    kvzch_cache* created = nullptr;
    detail::check("kvzch_cache_create", kvzch_cache_create(&raw, &created));
    handle_.reset(created);
    row_bytes_ = raw.row_bytes;
  }

  Cache(Cache&&) noexcept = default;
  Cache& operator=(Cache&&) noexcept = default;
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  ~Cache() = default;

  void batch_set(const std::int64_t* ids, std::size_t n, const void* rows, std::size_t rows_len,
                 std::uint32_t timestamp) {
    detail::check("kvzch_cache_batch_set",
                  kvzch_cache_batch_set(handle(), ids, n, rows, rows_len, timestamp));
  }

  [[nodiscard]] kvzch_batch_stats batch_get(const std::int64_t* ids, std::size_t n, void* out,
                                            std::size_t out_len, std::uint8_t* hit_mask = nullptr) {
    kvzch_batch_stats stats{};
    detail::check("kvzch_cache_batch_get",
                  kvzch_cache_batch_get(handle(), ids, n, out, out_len, hit_mask, &stats));
    return stats;
  }

  [[nodiscard]] std::uint64_t batch_remove(const std::int64_t* ids, std::size_t n) {
    std::uint64_t removed = 0;
    detail::check("kvzch_cache_batch_remove",
                  kvzch_cache_batch_remove(handle(), ids, n, &removed));
    return removed;
  }

  [[nodiscard]] std::uint64_t evict_older_than(std::uint32_t threshold) {
    std::uint64_t evicted = 0;
    detail::check("kvzch_cache_evict_older_than",
                  kvzch_cache_evict_older_than(handle(), threshold, &evicted));
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
      const std::string message = "batch_get: hit_mask.size() " + std::to_string(hit_mask.size()) +
                                  " < ids.size() " + std::to_string(ids.size());
      throw Error(KVZCH_STATUS_INVALID_ARGUMENT,
                  std::string("kvzch::Cache::batch_get: INVALID_ARGUMENT: ") + message, message);
    }
    return batch_get(ids.data(), ids.size(), out.data(), out.size(),
                     hit_mask.empty() ? nullptr : hit_mask.data());
  }

  [[nodiscard]] std::uint64_t batch_remove(std::span<const std::int64_t> ids) {
    return batch_remove(ids.data(), ids.size());
  }
#endif

  [[nodiscard]] kvzch_cache_info info() const {
    kvzch_cache_info out{};
    out.struct_size = sizeof(kvzch_cache_info);
    detail::check("kvzch_cache_get_info", kvzch_cache_get_info(handle_.get(), &out));
    return out;
  }

  /* Counts since the previous call on this cache, and resets them. */
  [[nodiscard]] kvzch_read_stats read_hit_rate_stats() {
    kvzch_read_stats out{};
    detail::check("kvzch_cache_get_read_hit_rate_stats",
                  kvzch_cache_get_read_hit_rate_stats(handle(), &out));
    return out;
  }

  /* Counts since creation; resets nothing, so any number of pollers agree. */
  [[nodiscard]] kvzch_read_stats cumulative_read_stats() const {
    kvzch_read_stats out{};
    detail::check("kvzch_cache_get_cumulative_read_stats",
                  kvzch_cache_get_cumulative_read_stats(handle_.get(), &out));
    return out;
  }

  [[nodiscard]] std::uint32_t row_bytes() const noexcept { return row_bytes_; }
  [[nodiscard]] kvzch_cache* handle() const noexcept { return handle_.get(); }

  /* Calls `callable` once per non-empty batch_get on this cache, on the
   * calling thread, until the returned registration ends. */
  template <class F>
  [[nodiscard]] SinkRegistration on_batch(F&& callable) {
    return register_sink(handle(), std::forward<F>(callable));
  }

 private:
  struct Deleter {
    void operator()(kvzch_cache* cache) const noexcept { kvzch_cache_destroy(cache); }
  };

  std::unique_ptr<kvzch_cache, Deleter> handle_;
  std::uint32_t row_bytes_ = 0;
};

/* Turns each batch event into the three fb303-style calls a predictor
 * exports, add_stat_value(name, value), under the canonical counter names
 * the library reports (kvzch_stat_name), so dashboards keyed on the upstream
 * names keep working. */
template <class AddStatValue>
class StatAdapter {
 public:
  explicit StatAdapter(AddStatValue add_stat_value)
      : add_(std::move(add_stat_value)),
        hit_(canonical_name(KVZCH_STAT_READ_HIT_COUNT)),
        miss_(canonical_name(KVZCH_STAT_READ_MISS_COUNT)),
        total_(canonical_name(KVZCH_STAT_READ_TOTAL_COUNT)) {}

  void operator()(const kvzch_batch_event& event) {
    add_(hit_, static_cast<std::int64_t>(event.stats.hits));
    add_(miss_, static_cast<std::int64_t>(event.stats.misses));
    add_(total_, static_cast<std::int64_t>(event.stats.total));
  }

 private:
  static std::string_view canonical_name(std::uint32_t stat) {
    const char* name = kvzch_stat_name(stat);
    if (name == nullptr) {
      throw Error(KVZCH_STATUS_INTERNAL, "kvzch_stat_name: INTERNAL: no name for a 1.0 counter",
                  "no name for a 1.0 counter");
    }
    return name;
  }

  AddStatValue add_;
  std::string_view hit_;
  std::string_view miss_;
  std::string_view total_;
};

/* cache.on_batch(kvzch::fb303_style([&](std::string_view name, int64_t v) {
 *   stats.add_stat_value(name, v); })) */
template <class AddStatValue>
[[nodiscard]] StatAdapter<std::decay_t<AddStatValue>> fb303_style(AddStatValue&& add_stat_value) {
  return StatAdapter<std::decay_t<AddStatValue>>(std::forward<AddStatValue>(add_stat_value));
}

}  // namespace kvzch

#endif /* KVZCH_HPP */
