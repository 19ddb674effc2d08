from rest_framework import serializers


class MessageCreateSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=100_000)
    client_id = serializers.CharField(required=False, allow_blank=True, max_length=64)
