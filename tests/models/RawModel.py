"""*_raw hooks: the message goes to the user as parsed, the reply comes back as is."""


class SeldonNotImplementedError(Exception):
    pass


class RawModel:
    def predict_raw(self, msg):
        if isinstance(msg, (bytes, str)):
            return b'{"echo":' + (msg if isinstance(msg, bytes) else msg.encode()) + b"}"
        if hasattr(msg, "SerializeToString"):  # gRPC: the SeldonMessage proto itself
            msg.strData = "raw-grpc"
            return msg
        if msg.get("strData") == "teapot":
            return {"status": {"code": 418, "info": "teapot"}, "meta": {"metrics": [{"key": "raw_count", "type": "COUNTER", "value": 1}]}}
        return {"jsonData": {"got": msg}}

    def route_raw(self, msg):
        raise SeldonNotImplementedError("fall through")

    def route(self, features, names):
        return 2

    def health_status_raw(self):
        return {"status": {"status": 0}, "strData": "raw ok"}
