"""Generated from gateway/proto/tritone/v1/tts.proto by gateway.proto.build."""
