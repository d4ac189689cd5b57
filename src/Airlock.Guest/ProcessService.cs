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
            "Update" => ConnectRpc.UnaryAsync(context, UpdateRequest.Parser, (request, _) => ValueTask.FromResult<IMessage>(Update(request))),
            "StreamInput" => ConnectRpc.ClientStreamAsync<StreamInputRequest, StreamInputState>(context, StreamInputRequest.Parser, new StreamInputResponse(), StreamInput),
            _ => ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.NotFound, $"process.Process has no method '{method}'")),
        };
    }

    private async Task StartAsync(HttpContext context, StartRequest request, ConnectStream stream, CancellationToken cancellationToken)
    {
        var process = table.Start(request, ConnectRpc.User(context));
        try
        {
            await stream.WriteAsync(new StartResponse { Event = new ProcessEvent { Start = new ProcessEvent.Types.StartEvent { Pid = process.Pid } } }, cancellationToken);
            await RelayAsync(process.FirstSubscription, e => new StartResponse { Event = e }, stream, ConnectRpc.KeepaliveInterval(context), cancellationToken);
        }
        finally
        {
            // A subscription nobody reads would hold the process's output back once its queue fills.
            process.Unsubscribe(process.FirstSubscription);
        }
    }

    private async Task ConnectAsync(HttpContext context, ConnectRequest request, ConnectStream stream, CancellationToken cancellationToken)
    {
        var process = table.Find(request.Process);
        var events = process.Subscribe();
        try
        {
            await stream.WriteAsync(new ConnectResponse { Event = new ProcessEvent { Start = new ProcessEvent.Types.StartEvent { Pid = process.Pid } } }, cancellationToken);
            await RelayAsync(events, e => new ConnectResponse { Event = e }, stream, ConnectRpc.KeepaliveInterval(context), cancellationToken);
        }
        finally
        {
            process.Unsubscribe(events);
        }
    }

    /// <summary>Copies a process's events to the stream until its end event, sending keepalives while it is quiet.</summary>
    private static async Task RelayAsync(
        ChannelReader<ProcessEvent> events,
        Func<ProcessEvent, IMessage> wrap,
        ConnectStream stream,
        TimeSpan? keepalive,
        CancellationToken cancellationToken)
    {
        Task<bool>? waiting = null;
        Task? tick = null;
        while (true)
        {
            waiting ??= events.WaitToReadAsync(cancellationToken).AsTask();
            if (keepalive is { } interval)
            {
                // One timer per interval, not per event: a busy stream would otherwise leave a pending timer per write.
                tick ??= Task.Delay(interval, cancellationToken);
                var first = await Task.WhenAny(waiting, tick);
                if (first != waiting)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    tick = null;
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
        await WriteInputAsync(table.Find(request.Process), request.Input, cancellationToken);
        return new SendInputResponse();
    }

    private static async Task WriteInputAsync(ManagedProcess process, ProcessInput? input, CancellationToken cancellationToken)
    {
        switch (input?.InputCase)
        {
            case ProcessInput.InputOneofCase.Stdin:
                await process.WriteStdinAsync(input.Stdin.Memory, cancellationToken);
                break;
            case ProcessInput.InputOneofCase.Pty:
                await process.WritePtyAsync(input.Pty.Memory, cancellationToken);
                break;
            default:
                throw new ConnectException(ConnectCodes.InvalidArgument, "input.stdin or input.pty is required");
        }
    }

    /// <summary>
    /// Client-streamed input: a start event naming the process, then data events (and keepalives) until the client
    /// ends its stream. Each data event is written as it arrives.
    /// </summary>
    private async Task StreamInput(StreamInputRequest request, StreamInputState state, CancellationToken cancellationToken)
    {
        switch (request.EventCase)
        {
            case StreamInputRequest.EventOneofCase.Start:
                if (state.Process is not null)
                {
                    throw new ConnectException(ConnectCodes.InvalidArgument, "the input stream already named its process");
                }

                state.Process = table.Find(request.Start.Process);
                break;
            case StreamInputRequest.EventOneofCase.Data:
                var process = state.Process ?? throw new ConnectException(ConnectCodes.InvalidArgument, "the input stream must start with a start event naming the process");
                if (process.HasExited)
                {
                    throw new ConnectException(ConnectCodes.NotFound, $"process {process.Pid} has exited");
                }

                await WriteInputAsync(process, request.Data.Input, cancellationToken);
                break;
            case StreamInputRequest.EventOneofCase.Keepalive:
                break;
            default:
                throw new ConnectException(ConnectCodes.InvalidArgument, "a StreamInputRequest needs an event (start, data or keepalive)");
        }
    }

    private UpdateResponse Update(UpdateRequest request)
    {
        var process = table.Find(request.Process);
        if (request.Pty is { } pty)
        {
            if (pty.Size is null)
            {
                throw new ConnectException(ConnectCodes.InvalidArgument, "pty.size is required to resize");
            }

            process.Resize(pty.Size.Cols, pty.Size.Rows);
        }

        return new UpdateResponse();
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

/// <summary>What a StreamInput call has learned so far: the process its start event named.</summary>
internal sealed class StreamInputState
{
    public ManagedProcess? Process { get; set; }
}
