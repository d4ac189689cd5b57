using System.Threading.Channels;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;
using Google.Protobuf;

namespace Airlock.Guest;

/// <summary>envd's <c>process.Process</c> service.</summary>
internal sealed class ProcessService(ProcessTable table)
{
    public Task HandleAsync(HttpContext context)
    {
        var method = context.Request.RouteValues["method"] as string;
        return method switch
        {
            "Start" => ConnectRpc.StreamAsync(context, StartRequest.Parser, (request, stream, ct) => StartAsync(context, request, stream, ct)),
            "Connect" => ConnectRpc.StreamAsync(context, ConnectRequest.Parser, (request, stream, ct) => ConnectAsync(context, request, stream, ct)),
            "List" => ConnectRpc.UnaryAsync(context, ListRequest.Parser, (_, _) => ValueTask.FromResult<IMessage>(List())),
            "SendInput" => ConnectRpc.UnaryAsync(context, SendInputRequest.Parser, SendInputAsync),
            "SendSignal" => ConnectRpc.UnaryAsync(context, SendSignalRequest.Parser, (request, _) => ValueTask.FromResult<IMessage>(SendSignal(request))),
            "CloseStdin" => ConnectRpc.UnaryAsync(context, CloseStdinRequest.Parser, (request, _) =>
            {
                table.Find(request.Process).CloseStdin();
                return ValueTask.FromResult<IMessage>(new CloseStdinResponse());
            }),
            "Update" or "StreamInput" => ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.Unimplemented, $"process.Process/{method} is not implemented by this agent")),
            _ => ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.NotFound, $"process.Process has no method '{method}'")),
        };
    }

    private async Task StartAsync(HttpContext context, StartRequest request, ConnectStream stream, CancellationToken cancellationToken)
    {
        var process = table.Start(request, ConnectRpc.User(context));
        await stream.WriteAsync(new StartResponse { Event = new ProcessEvent { Start = new ProcessEvent.Types.StartEvent { Pid = process.Pid } } }, cancellationToken);
        await RelayAsync(process, process.FirstSubscription, e => new StartResponse { Event = e }, stream, ConnectRpc.KeepaliveInterval(context), cancellationToken);
    }

    private async Task ConnectAsync(HttpContext context, ConnectRequest request, ConnectStream stream, CancellationToken cancellationToken)
    {
        var process = table.Find(request.Process);
        var events = process.Subscribe();
        await stream.WriteAsync(new ConnectResponse { Event = new ProcessEvent { Start = new ProcessEvent.Types.StartEvent { Pid = process.Pid } } }, cancellationToken);
        await RelayAsync(process, events, e => new ConnectResponse { Event = e }, stream, ConnectRpc.KeepaliveInterval(context), cancellationToken);
    }

    /// <summary>Copies a process's events to the stream until its end event, sending keepalives while it is quiet.</summary>
    private static async Task RelayAsync(
        ManagedProcess process,
        ChannelReader<ProcessEvent> events,
        Func<ProcessEvent, IMessage> wrap,
        ConnectStream stream,
        TimeSpan? keepalive,
        CancellationToken cancellationToken)
    {
        try
        {
            Task<bool>? waiting = null;
            while (true)
            {
                waiting ??= events.WaitToReadAsync(cancellationToken).AsTask();
                if (keepalive is { } interval)
                {
                    var first = await Task.WhenAny(waiting, Task.Delay(interval, cancellationToken));
                    if (first != waiting)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        await stream.WriteAsync(wrap(new ProcessEvent { Keepalive = new ProcessEvent.Types.KeepAlive() }), cancellationToken);
                        continue;
                    }
                }

                if (!await waiting)
                {
                    return;
                }

                waiting = null;
                while (events.TryRead(out var e))
                {
                    await stream.WriteAsync(wrap(e), cancellationToken);
                }
            }
        }
        finally
        {
            process.Unsubscribe(events);
        }
    }

    private ListResponse List()
    {
        var response = new ListResponse();
        foreach (var process in table.Running)
        {
            var info = new ProcessInfo { Config = process.Config, Pid = process.Pid };
            if (process.Tag is not null)
            {
                info.Tag = process.Tag;
            }

            response.Processes.Add(info);
        }

        return response;
    }

    private async ValueTask<IMessage> SendInputAsync(SendInputRequest request, CancellationToken cancellationToken)
    {
        var process = table.Find(request.Process);
        switch (request.Input?.InputCase)
        {
            case ProcessInput.InputOneofCase.Stdin:
                await process.WriteStdinAsync(request.Input.Stdin.Memory, cancellationToken);
                break;
            case ProcessInput.InputOneofCase.Pty:
                throw new ConnectException(ConnectCodes.Unimplemented, "PTY input is not implemented by this agent");
            default:
                throw new ConnectException(ConnectCodes.InvalidArgument, "input.stdin is required");
        }

        return new SendInputResponse();
    }

    private SendSignalResponse SendSignal(SendSignalRequest request)
    {
        var process = table.Find(request.Process);
        var signal = request.Signal switch
        {
            Signal.Sigkill => 9,
            Signal.Sigterm => 15,
            _ => throw new ConnectException(ConnectCodes.InvalidArgument, "signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL"),
        };
        process.Signal(signal);
        return new SendSignalResponse();
    }
}
