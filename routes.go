package main

import (
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"pgsse/event"
	"pgsse/stream"
)

// registerAliases mounts the path aliases of /events: /videos/{id}/events
// streams videos/{id}, for any id, URL-encoded once
// (/videos/legacy%20upload/events).
func registerAliases(e *echo.Echo, streams *stream.Handler) {
	e.GET("/videos/:id/events", streams.TopicStream(videoTopic))
}

func videoTopic(c echo.Context) (string, error) {
	id, err := stream.PathParam(c, "id")
	if err != nil {
		return "", err
	}
	topic, ok := event.VideoTopic(id)
	if !ok {
		return "", &stream.RequestError{Status: http.StatusBadRequest, Param: "id",
			Reason: fmt.Sprintf("video id must be 1 to %d bytes once encoded", event.MaxTopicLen-len("videos/"))}
	}
	return topic, nil
}
