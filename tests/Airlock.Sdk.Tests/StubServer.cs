using System.Collections.Concurrent;
using System.Net;
using System.Text;

namespace Airlock.Sdk.Tests;

/// <summary>A request the stub received.</summary>
public sealed record StubRequest(string Method, string PathAndQuery, IReadOnlyDictionary<string, string> Headers, string Body);

/// <summary>
/// A loopback HTTP stub that records requests and answers with canned responses. It only checks request and
/// response shapes; the real airlockd is exercised by the end-to-end tests.
/// </summary>
public sealed class StubServer : IAsyncDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Func<StubRequest, (int Status, string? Json)> _respond;
    private readonly Task _loop;
    private readonly CancellationTokenSource _stop = new();

    public StubServer(Func<StubRequest, (int Status, string? Json)> respond)
    {
        _respond = respond;
        var port = Airlock.Testing.Loopback.FreePort();
        BaseUrl = new Uri($"http://127.0.0.1:{port}/");
        _listener.Prefixes.Add(BaseUrl.ToString());
        _listener.Start();
        _loop = Task.Run(LoopAsync);
    }

    public Uri BaseUrl { get; }

    public ConcurrentQueue<StubRequest> Requests { get; } = new();

    /// <summary>When set, the stub holds every request this long before answering.</summary>
    public TimeSpan Delay { get; set; }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        _listener.Close();
        try
        {
            await _loop.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or OperationCanceledException)
        {
        }

        _stop.Dispose();
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            _ = Task.Run(() => HandleAsync(context));
        }
    }

    private async Task HandleAsync(HttpListenerContext context)
    {
        try
        {
            using var reader = new StreamReader(context.Request.InputStream, Encoding.UTF8);
            var body = await reader.ReadToEndAsync();
            var headers = context.Request.Headers.AllKeys.Where(k => k is not null)
                .ToDictionary(k => k!, k => context.Request.Headers[k]!, StringComparer.OrdinalIgnoreCase);
            var request = new StubRequest(context.Request.HttpMethod, context.Request.Url!.PathAndQuery, headers, body);
            Requests.Enqueue(request);
            if (Delay > TimeSpan.Zero)
            {
                await Task.Delay(Delay, _stop.Token);
            }

            var (status, json) = _respond(request);
            context.Response.StatusCode = status;
            if (json is not null)
            {
                var bytes = Encoding.UTF8.GetBytes(json);
                context.Response.ContentType = "application/json";
                context.Response.ContentLength64 = bytes.Length;
                await context.Response.OutputStream.WriteAsync(bytes);
            }

            context.Response.Close();
        }
        catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            // The client went away or the stub is stopping.
        }
    }
}

/// <summary>Canned airlockd JSON.</summary>
public static class Canned
{
    public const string Id = "abcdefghij0123456789";

    public const string Boundary = """
        {"boundary":"process","driver":"bubblewrap","runtime":"bubblewrap 0.8.0","kernel":"6.1.0","limits":{"memoryMiB":512,"pids":256,"cpuMillis":1000,"vCpus":1},"network":"netns airlock-abcdefghij0123456789"}
        """;

    public static readonly string Created = $$"""
        {"sandboxID":"{{Id}}","templateID":"base","clientID":"airlock","envdVersion":"0.2.0","envdAccessToken":"tok-123","domain":"localhost","boundary":{{Boundary}}}
        """;

    public static readonly string Detail = $$"""
        {"sandboxID":"{{Id}}","templateID":"base","startedAt":"2026-01-01T00:00:00Z","endAt":"2026-01-01T00:05:00Z","envdVersion":"0.2.0","envdAccessToken":"tok-123","domain":"localhost","state":"running","metadata":{"team":"blue"},"boundary":{{Boundary}}}
        """;

    public static string Error(int code, string errorCode, string message) =>
        $$"""{"code":{{code}},"message":"{{message}}","error_code":"{{errorCode}}"}""";
}
