#include "server/core/number_format.h"

#include <charconv>
#include <cmath>

namespace gradnorm {
namespace server {

std::string FormatNumber(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  // Shortest round-trip form, so a message names exactly the value received.
  std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

}  // namespace server
}  // namespace gradnorm
