"""A stand-in for the parts of seldon_core a user model imports, for environments where the real
package cannot be installed beside the test dependencies (grpcio-tools needs protobuf 6; seldon-core
pins 3.20 or 5.29). Written from seldon-core 1.19's behaviour: the base methods of SeldonComponent
raise SeldonNotImplementedError (a 400 SeldonMicroserviceException) with the same messages. The
seldon-core CI environments run the same tests against the real package instead."""
