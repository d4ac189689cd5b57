namespace Airlock.Envd.Connect;

/// <summary>Connect error codes and their HTTP statuses (https://connectrpc.com/docs/protocol#error-codes).</summary>
public static class ConnectCodes
{
    public const string Canceled = "canceled";
    public const string Unknown = "unknown";
    public const string InvalidArgument = "invalid_argument";
    public const string DeadlineExceeded = "deadline_exceeded";
    public const string NotFound = "not_found";
    public const string AlreadyExists = "already_exists";
    public const string PermissionDenied = "permission_denied";
    public const string ResourceExhausted = "resource_exhausted";
    public const string FailedPrecondition = "failed_precondition";
    public const string Aborted = "aborted";
    public const string OutOfRange = "out_of_range";
    public const string Unimplemented = "unimplemented";
    public const string Internal = "internal";
    public const string Unavailable = "unavailable";
    public const string DataLoss = "data_loss";
    public const string Unauthenticated = "unauthenticated";

    public static int ToHttpStatus(string code) => code switch
    {
        Canceled => 499,
        InvalidArgument or FailedPrecondition or OutOfRange => 400,
        DeadlineExceeded => 504,
        NotFound => 404,
        AlreadyExists or Aborted => 409,
        PermissionDenied => 403,
        ResourceExhausted => 429,
        Unimplemented => 501,
        Unavailable => 503,
        Unauthenticated => 401,
        _ => 500,
    };

    public static string FromHttpStatus(int status) => status switch
    {
        400 => InvalidArgument,
        401 => Unauthenticated,
        403 => PermissionDenied,
        404 => Unimplemented,
        408 or 504 => DeadlineExceeded,
        409 => Aborted,
        429 or 502 or 503 => Unavailable,
        499 => Canceled,
        501 => Unimplemented,
        _ => Unknown,
    };
}

/// <summary>An error to send to a Connect client, or one received from a Connect server.</summary>
public sealed class ConnectException(string code, string message) : Exception(message)
{
    public string Code { get; } = code;

    public int HttpStatus => ConnectCodes.ToHttpStatus(Code);
}
