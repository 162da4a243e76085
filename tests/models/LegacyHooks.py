"""Seldon's legacy low-level hooks (*_rest / *_grpc): each protocol calls its own, with the
request as the wire gave it, and the reply goes out as is."""
import json


class LegacyHooks:
    def predict_rest(self, request):
        return {"jsonData": {"via": "predict_rest", "got": request}}

    def predict_grpc(self, request):
        request.strData = "via predict_grpc"
        request.ClearField("meta")
        return request

    def transform_input_rest(self, request):
        return {"strData": "via transform_input_rest", "meta": {"tags": {"n": len(request["data"]["ndarray"])}}}

    def transform_input_grpc(self, request):
        return {"strData": "via transform_input_grpc"}

    def route_rest(self, request):
        return {"data": {"ndarray": [[7]]}}

    def route_grpc(self, request):
        return {"data": {"ndarray": [[8]]}}

    def aggregate_rest(self, request):
        return {"strData": f"via aggregate_rest: {len(request['seldonMessages'])}"}

    def aggregate_grpc(self, request):
        return {"strData": f"via aggregate_grpc: {len(request.seldonMessages)}"}

    def send_feedback_rest(self, request_json):
        reward = json.loads(request_json)["reward"]  # Seldon passes protobuf's JSON text
        return {"strData": f"via send_feedback_rest: {reward}"}

    def send_feedback_grpc(self, request):
        return {"strData": f"via send_feedback_grpc: {request.reward}"}
