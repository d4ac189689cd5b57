using Airlock.Core.Api;
using Microsoft.AspNetCore.Http;

namespace Airlock.Server.Api;

/// <summary>An expected failure of an API call, carried to the edge and written as <see cref="ApiError"/>.</summary>
public sealed class ApiProblem(int status, string errorCode, string message) : Exception(message)
{
    public int Status { get; } = status;
    public string ErrorCode { get; } = errorCode;

    public static ApiProblem BadRequest(string code, string message) => new(StatusCodes.Status400BadRequest, code, message);
    public static ApiProblem NotFound(string code, string message) => new(StatusCodes.Status404NotFound, code, message);
    public static ApiProblem Conflict(string code, string message) => new(StatusCodes.Status409Conflict, code, message);

    /// <summary>The one mapping of lifecycle error kinds to HTTP statuses.</summary>
    public static int StatusOf(Airlock.Sandboxes.SandboxErrorKind kind) => kind switch
    {
        Airlock.Sandboxes.SandboxErrorKind.InvalidArgument => StatusCodes.Status400BadRequest,
        Airlock.Sandboxes.SandboxErrorKind.NotFound => StatusCodes.Status404NotFound,
        Airlock.Sandboxes.SandboxErrorKind.Conflict => StatusCodes.Status409Conflict,
        Airlock.Sandboxes.SandboxErrorKind.QuotaExceeded => StatusCodes.Status429TooManyRequests,
        Airlock.Sandboxes.SandboxErrorKind.Unavailable => StatusCodes.Status422UnprocessableEntity,
        Airlock.Sandboxes.SandboxErrorKind.InsufficientStorage => StatusCodes.Status507InsufficientStorage,
        _ => StatusCodes.Status500InternalServerError,
    };

    public ApiError ToError() => new() { Code = Status, Message = Message, ErrorCode = ErrorCode };

    public static Task WriteAsync(HttpContext context, int status, string errorCode, string message)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(
            new ApiError { Code = status, Message = message, ErrorCode = errorCode },
            ApiJsonContext.Default.ApiError,
            contentType: "application/json",
            cancellationToken: context.RequestAborted);
    }
}
