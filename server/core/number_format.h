// Numbers in error messages and reason details: the shortest text that reads
// back as the same double ("0.97", "5.477225575051661", "inf", "nan").
//
//   absl::StrCat("max_norm ", FormatNumber(1.0))  // "max_norm 1"
//
// Thread-safety: pure function.
#ifndef GRADNORM_SERVER_CORE_NUMBER_FORMAT_H_
#define GRADNORM_SERVER_CORE_NUMBER_FORMAT_H_

#include <string>

namespace gradnorm {
namespace server {

std::string FormatNumber(double value);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_NUMBER_FORMAT_H_
