// gradnormctl's commands: each makes its RPC (bounded by --timeout), prints
// the answer (a table, or JSON with --json) and returns the exit status: 0, or
// 1 when the RPC failed (its code and message on stderr).
//
//   auto stub = gradnorm::v1::Coordinator::NewStub(channel);
//   return Runs(*stub, token);
#ifndef GRADNORM_TOOLS_GRADNORMCTL_COMMANDS_H_
#define GRADNORM_TOOLS_GRADNORMCTL_COMMANDS_H_

#include <memory>
#include <string>

#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "grpcpp/channel.h"

namespace gradnorm {
namespace gradnormctl {

using ::gradnorm::v1::Coordinator;

int Runs(Coordinator::Stub& stub, const std::string& token);
int Run(Coordinator::Stub& stub, const std::string& token,
        const std::string& run_id);
int History(Coordinator::Stub& stub, const std::string& token,
            const std::string& run_id);
int Summary(Coordinator::Stub& stub, const std::string& token,
            const std::string& run_id);
// The history as a chart sized to the terminal (plot.h); --watch redraws it
// every second until interrupted.
int Plot(Coordinator::Stub& stub, const std::string& token,
         const std::string& run_id);
// Follows the run until the coordinator ends the stream (a finished run: 0)
// or it fails; waits for a run not registered yet. --timeout bounds
// connecting.
int Watch(const std::shared_ptr<grpc::Channel>& channel,
          const std::string& token, const std::string& run_id);
// The run's finalized rounds from --from to its last one (at the call) as a
// TensorBoard event file in `dir` (tensorboard.h); prints the file's path.
// parity RUN_A RUN_B: compares the two runs' totals step by step, bitwise
// (parity.h); exit 0 when every common step is equal, 1 when one differs.
int Parity(Coordinator::Stub& stub, const std::string& token,
           const std::string& run_a, const std::string& run_b);
int ExportTensorBoard(const std::shared_ptr<grpc::Channel>& channel,
                      const std::string& token, const std::string& run_id,
                      const std::string& dir);
// 0 only when the server (or --service) is SERVING.
int Health(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token);
int Register(Coordinator::Stub& stub, const std::string& token,
             const std::string& run_id, const gradnorm::v1::RunConfig& config);
int Finish(Coordinator::Stub& stub, const std::string& token,
           const std::string& run_id);
int Delete(Coordinator::Stub& stub, const std::string& token,
           const std::string& run_id);

}  // namespace gradnormctl
}  // namespace gradnorm

#endif  // GRADNORM_TOOLS_GRADNORMCTL_COMMANDS_H_
