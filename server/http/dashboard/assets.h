// The dashboard's files (HTML, script, style, and the chart library from
// Debian's libjs-chart.js), compiled into the coordinator by embed_assets.
//
//   const DashboardAsset* asset = FindDashboardAsset("/");  // index.html
//   if (asset != nullptr) Serve(asset->content_type, asset->body);
//
// Thread-safety: immutable.
#ifndef GRADNORM_SERVER_HTTP_DASHBOARD_ASSETS_H_
#define GRADNORM_SERVER_HTTP_DASHBOARD_ASSETS_H_

#include "absl/strings/string_view.h"

namespace gradnorm {
namespace server {

struct DashboardAsset {
  absl::string_view path;  // URL path, e.g. "/static/dashboard.js"
  absl::string_view content_type;
  absl::string_view body;
};

// The asset served at `path`, or null.
const DashboardAsset* FindDashboardAsset(absl::string_view path);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_DASHBOARD_ASSETS_H_
