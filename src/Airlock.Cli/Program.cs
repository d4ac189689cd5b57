using System.Runtime.InteropServices;
using Airlock.Cli;

// First SIGINT/SIGTERM cancels the running command (serve stops its sandboxes, exec stops streaming);
// a second one terminates the process the default way.
using var stop = new CancellationTokenSource();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Cancel);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Cancel);
return await AirlockCli.RunAsync(args, CliConsole.System(), stop.Token);

void Cancel(PosixSignalContext context)
{
    if (!stop.IsCancellationRequested)
    {
        context.Cancel = true;
        stop.Cancel();
    }
}
