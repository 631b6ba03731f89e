// gradnormctl's commands: each makes its RPC (bounded by --timeout), prints
// the answer (a table, or JSON with --json) and returns the exit status: 0, or
// 1 when the RPC failed (its code and message on stderr). A coordinator that
// answers UNAVAILABLE while it can be reached (a replica while the
// coordinator holding the database changes) is asked again until --timeout,
// except by health and delete; a target where no coordinator can be reached
// fails at once.
//
//   return Runs(channel, token);
#ifndef GRADNORM_TOOLS_GRADNORMCTL_COMMANDS_H_
#define GRADNORM_TOOLS_GRADNORMCTL_COMMANDS_H_

#include <memory>
#include <string>

#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "grpcpp/channel.h"

namespace gradnorm {
namespace gradnormctl {

using ::gradnorm::v1::Coordinator;

int Runs(const std::shared_ptr<grpc::Channel>& channel,
         const std::string& token);
int Run(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
        const std::string& run_id);
int History(const std::shared_ptr<grpc::Channel>& channel,
            const std::string& token, const std::string& run_id);
int Summary(const std::shared_ptr<grpc::Channel>& channel,
            const std::string& token, const std::string& run_id);
// The history as a chart sized to the terminal (plot.h); --watch redraws it
// every second until interrupted.
int Plot(const std::shared_ptr<grpc::Channel>& channel,
         const std::string& token, const std::string& run_id);
// Follows the run until the coordinator ends the stream (a finished run: 0)
// or it fails; waits for a run not registered yet. --timeout bounds
// connecting.
int Watch(const std::shared_ptr<grpc::Channel>& channel,
          const std::string& token, const std::string& run_id);
// parity RUN_A RUN_B: compares the two runs' totals step by step, bitwise
// (parity.h); exit 0 when every common step is equal, 1 when one differs.
int Parity(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token, const std::string& run_a,
           const std::string& run_b);
// The run's finalized rounds from --from to its last one (at the call) as a
// TensorBoard event file in `dir` (tensorboard.h); prints the file's path.
int ExportTensorBoard(const std::shared_ptr<grpc::Channel>& channel,
                      const std::string& token, const std::string& run_id,
                      const std::string& dir);
// 0 only when the server (or --service) is SERVING.
int Health(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token);
int Register(const std::shared_ptr<grpc::Channel>& channel,
             const std::string& token, const std::string& run_id,
             const gradnorm::v1::RunConfig& config);
int Finish(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token, const std::string& run_id);
int Delete(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token, const std::string& run_id);

}  // namespace gradnormctl
}  // namespace gradnorm

#endif  // GRADNORM_TOOLS_GRADNORMCTL_COMMANDS_H_
