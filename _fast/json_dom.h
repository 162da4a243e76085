// Thin, exception-free accessors over simdjson's DOM for jsontensors.pyx. Each getter is
// called only after kind() has said the element holds that type, so value_unsafe() is safe.
#ifndef FASTSELDON_JSON_DOM_H
#define FASTSELDON_JSON_DOM_H

#include <cstdint>
#include <vector>
#include "simdjson.h"

namespace fsj {

namespace dom = simdjson::dom;

enum Kind { K_ARRAY, K_OBJECT, K_INT64, K_UINT64, K_DOUBLE, K_STRING, K_BOOL, K_NULL };

inline int kind(const dom::element &e) noexcept {
  switch (e.type()) {
    case dom::element_type::ARRAY: return K_ARRAY;
    case dom::element_type::OBJECT: return K_OBJECT;
    case dom::element_type::INT64: return K_INT64;
    case dom::element_type::UINT64: return K_UINT64;
    case dom::element_type::DOUBLE: return K_DOUBLE;
    case dom::element_type::STRING: return K_STRING;
    case dom::element_type::BOOL: return K_BOOL;
    default: return K_NULL;
  }
}

inline double as_double(const dom::element &e) noexcept { return e.get_double().value_unsafe(); }
inline int64_t as_int64(const dom::element &e) noexcept { return e.get_int64().value_unsafe(); }
inline uint64_t as_uint64(const dom::element &e) noexcept { return e.get_uint64().value_unsafe(); }
inline bool as_bool(const dom::element &e) noexcept { return e.get_bool().value_unsafe(); }
inline dom::array as_array(const dom::element &e) noexcept { return e.get_array().value_unsafe(); }
inline dom::object as_object(const dom::element &e) noexcept { return e.get_object().value_unsafe(); }

inline const char *as_str(const dom::element &e, size_t *len) noexcept {
  std::string_view s = e.get_string().value_unsafe();
  *len = s.size();
  return s.data();
}

// Array sizes saturate at 0xFFFFFF in simdjson's tape; callers treat that as "too big for
// the fast path".
inline size_t array_size(const dom::array &a) noexcept { return a.size(); }
inline size_t array_slots(const dom::array &a) noexcept { return a.number_of_slots(); }
inline dom::element first(const dom::array &a) noexcept { return *a.begin(); }

inline int parse(dom::parser &p, const char *buf, size_t len, dom::element *out) noexcept {
  return p.parse(reinterpret_cast<const uint8_t *>(buf), len, true).get(*out) == simdjson::SUCCESS ? 0 : -1;
}

inline const char *implementation_name() noexcept {
  return simdjson::get_active_implementation()->name().c_str();
}

}  // namespace fsj

#endif
