using System.Net;

namespace Airlock.Sdk;

/// <summary>airlockd (or the sandbox's agent behind it) refused or failed a request.</summary>
public sealed class AirlockApiException : Exception
{
    public AirlockApiException()
    {
        Code = "unknown";
    }

    public AirlockApiException(string message) : base(message)
    {
        Code = "unknown";
    }

    public AirlockApiException(string message, Exception innerException) : base(message, innerException)
    {
        Code = "unknown";
    }

    /// <summary>Creates an error with the HTTP status and airlockd's machine-readable code.</summary>
    public AirlockApiException(HttpStatusCode statusCode, string code, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        StatusCode = statusCode;
        Code = code;
    }

    /// <summary>HTTP status of the failed call (0 when the call never got a response).</summary>
    public HttpStatusCode StatusCode { get; }

    /// <summary>Stable machine-readable error code (airlockd's <c>error_code</c>, or envd's Connect code).</summary>
    public string Code { get; }
}
